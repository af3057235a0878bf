"""Writing-system detection (ISO 15924) from a document's characters, for a whole batch at once.

Design choices:
- One lookup table ``codepoint -> script class`` (numpy, covering U+0000..U+2FFFF) built once
  from Unicode block ranges of the scripts the 119 canonical languages use, plus the few
  others that are common on the web (Ethiopic, Tibetan, Thaana, ...). Blocks are a close
  enough proxy for the Unicode Script property for letters; digits, punctuation and symbols
  are "common" and never vote.
- A whole batch is classified with a few numpy calls and no Python loop per character:
  UTF-32 view, table lookup, then per document the largest and smallest class among its
  letters and control characters (``np.maximum/minimum.reduceat``). Most documents use
  one script, and for them that is the answer; the few that mix letter classes (Chinese
  mixes shared and variant Han, Japanese Han and kana) or hold control characters get
  their class counts (``detect_scripts``). ``script_counts`` + ``scripts_from_counts`` is
  the same decision from full counts (bincount over ``doc * n_classes + class``), kept as
  the reference the tests compare with. Per-character arrays live in per-thread scratch
  buffers reused from batch to batch: allocating fresh multi-megabyte arrays per batch
  cost more in page faults than the counting itself.
- Han characters are split three ways: simplified-only, traditional-only (the character
  sets in ``han_variants.tsv``, derived from hanziconv's table) and shared. A Han-dominant
  text is ``Hans`` or ``Hant`` by which of the two variant sets it uses more; ``Hani`` when
  neither appears. Kana makes a text ``Jpan`` (Japanese mixes Han and kana), Hangul ``Hang``.
- Control characters (other than tab/newline/CR), U+FFFD and lone surrogates count as "binary"; a text with
  no letters at all is ``Zyyy`` (common), so callers can treat it as undetermined.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import resources

import numpy as np

# (script code, ranges of codepoints); order matters only where ranges overlap (none do)
_SCRIPT_RANGES: list[tuple[str, list[tuple[int, int]]]] = [
    (
        "Latn",
        [
            (0x41, 0x5A),
            (0x61, 0x7A),
            (0xAA, 0xAA),
            (0xBA, 0xBA),
            (0xC0, 0xD6),
            (0xD8, 0xF6),
            (0xF8, 0x24F),
            (0x1E00, 0x1EFF),
            (0x2C60, 0x2C7F),
            (0xA720, 0xA7FF),
            (0xAB30, 0xAB6F),
            (0xFF21, 0xFF3A),
            (0xFF41, 0xFF5A),
        ],
    ),
    ("Grek", [(0x370, 0x3FF), (0x1F00, 0x1FFF)]),
    ("Cyrl", [(0x400, 0x52F), (0x1C80, 0x1C8F), (0x2DE0, 0x2DFF), (0xA640, 0xA69F)]),
    ("Armn", [(0x530, 0x58F)]),
    ("Hebr", [(0x590, 0x5FF), (0xFB1D, 0xFB4F)]),
    (
        "Arab",
        [(0x600, 0x6FF), (0x750, 0x77F), (0x8A0, 0x8FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)],
    ),
    ("Syrc", [(0x700, 0x74F)]),
    ("Thaa", [(0x780, 0x7BF)]),
    ("Nkoo", [(0x7C0, 0x7FF)]),
    ("Deva", [(0x900, 0x97F), (0xA8E0, 0xA8FF)]),
    ("Beng", [(0x980, 0x9FF)]),
    ("Guru", [(0xA00, 0xA7F)]),
    ("Gujr", [(0xA80, 0xAFF)]),
    ("Orya", [(0xB00, 0xB7F)]),
    ("Taml", [(0xB80, 0xBFF)]),
    ("Telu", [(0xC00, 0xC7F)]),
    ("Knda", [(0xC80, 0xCFF)]),
    ("Mlym", [(0xD00, 0xD7F)]),
    ("Sinh", [(0xD80, 0xDFF)]),
    ("Thai", [(0xE00, 0xE7F)]),
    ("Laoo", [(0xE80, 0xEFF)]),
    ("Tibt", [(0xF00, 0xFFF)]),
    ("Mymr", [(0x1000, 0x109F), (0xA9E0, 0xA9FF), (0xAA60, 0xAA7F)]),
    ("Geor", [(0x10A0, 0x10FF), (0x1C90, 0x1CBF), (0x2D00, 0x2D2F)]),
    ("Hang", [(0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7FF)]),
    ("Ethi", [(0x1200, 0x139F), (0x2D80, 0x2DDF)]),
    ("Cher", [(0x13A0, 0x13FF)]),
    ("Khmr", [(0x1780, 0x17FF), (0x19E0, 0x19FF)]),
    ("Mong", [(0x1800, 0x18AF)]),
    ("Tfng", [(0x2D30, 0x2D7F)]),
    ("Kana", [(0x3040, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9D)]),  # hiragana + katakana
    (
        "Hani",
        [
            (0x2E80, 0x2FDF),
            (0x3400, 0x4DBF),
            (0x4E00, 0x9FFF),
            (0xF900, 0xFAFF),
            (0x20000, 0x2FFFF),
        ],
    ),
]

SCRIPTS: tuple[str, ...] = ("Zyyy", "binary", *(s for s, _ in _SCRIPT_RANGES), "Hans", "Hant")
_INDEX = {s: i for i, s in enumerate(SCRIPTS)}
_N = len(SCRIPTS)
_TABLE_SIZE = 0x30000  # codepoints at or beyond it (planes 3+: tags, private use) are common
_SAMPLE_CHARS = 512  # characters of each text that vote (the start of the text)
# output names of ``scripts_from_counts``: the classes, then Japanese (Han + kana)
_NAMES = np.array([*SCRIPTS, "Jpan"], dtype=object)
_JPAN = len(SCRIPTS)
# the script of a text whose letters are all of one class (kana alone is Japanese)
_SINGLE = np.array([*SCRIPTS[:-2], "Hans", "Hant"], dtype=object)
_SINGLE[_INDEX["Kana"]] = "Jpan"
# class -> value whose per-text minimum says "binary present" (1), "no letters" (255) or
# else the smallest letter class: common characters are moved out of the way
_LOW = np.arange(256, dtype=np.uint8)
_LOW[_INDEX["Zyyy"]] = 255


def _load_han_variants() -> dict[str, str]:
    text = resources.files("classifiers.lid").joinpath("han_variants.tsv").read_text("utf-8")
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            script, chars = line.split("\t")
            out[script] = chars
    return out


def _build_table() -> np.ndarray:
    # one entry past the table: np.take(mode="clip") sends every larger codepoint there
    table = np.zeros(_TABLE_SIZE + 1, dtype=np.uint8)  # 0 = Zyyy (common)
    for script, ranges in _SCRIPT_RANGES:
        for lo, hi in ranges:
            table[lo : hi + 1] = _INDEX[script]
    for cp in [*range(0, 9), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, 0xFFFD]:
        table[cp] = _INDEX["binary"]
    table[0xD800:0xE000] = _INDEX["binary"]  # lone surrogates: undecodable input
    for script, chars in _load_han_variants().items():
        table[[ord(c) for c in chars]] = _INDEX[script]
    return table


_TABLE = _build_table()
_scratch = threading.local()


def _buffers(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This thread's reusable (intp, uint8, uint8) arrays of length ``m`` (module docstring)."""
    key = getattr(_scratch, "key", None)
    if key is None or len(key) < m:
        size = max(m + m // 4, 1 << 16)
        _scratch.key = np.empty(size, np.intp)
        _scratch.cls, _scratch.low = np.empty(size, np.uint8), np.empty(size, np.uint8)
    return _scratch.key[:m], _scratch.cls[:m], _scratch.low[:m]


def _classes(texts: list[str], sample_chars: int) -> tuple[np.ndarray, np.ndarray]:
    """Script class of each sampled character (all texts back to back), and sample lengths."""
    samples = [t[:sample_chars] for t in texts]
    lengths = np.fromiter(map(len, samples), dtype=np.intp, count=len(samples))
    cps = np.frombuffer("".join(samples).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    classes = _buffers(len(cps))[1]
    np.take(_TABLE, cps, mode="clip", out=classes)
    return classes, lengths


def script_counts(texts: list[str], sample_chars: int = _SAMPLE_CHARS) -> np.ndarray:
    """Per text, how many of its first ``sample_chars`` characters fall in each script class.

    Returns an int array of shape (len(texts), len(SCRIPTS)); column order is ``SCRIPTS``.
    """
    classes, lengths = _classes(texts, sample_chars)
    n = len(lengths)
    key = _buffers(len(classes))[0]
    # key = doc * _N + class: doc from a running sum of per-document start marks
    key.fill(0)
    starts = np.cumsum(lengths[:-1])
    np.add.at(key, starts[starts < len(key)], _N)  # empty texts share a start
    np.cumsum(key, out=key)
    key += classes
    return np.bincount(key, minlength=n * _N).reshape(n, _N)


@dataclass
class ScriptInfo:
    """What ``detect_scripts`` says about each text of a batch (row i = text i)."""

    script: list[str]  # dominant ISO 15924 code (``scripts_from_counts``)
    has_letters: np.ndarray  # bool: some sampled character belongs to a script
    binary_fraction: np.ndarray  # float: share of control characters / U+FFFD in the sample


def detect_scripts(texts: list[str], sample_chars: int = _SAMPLE_CHARS) -> ScriptInfo:
    """``scripts_from_counts``, ``letter_count > 0`` and ``binary_fraction`` of
    ``script_counts(texts)``, without counting every class of every text (module docstring).
    """
    classes, lengths = _classes(texts, sample_chars)
    n = len(lengths)
    script = np.zeros(n, dtype=object)
    script[:] = "Zyyy"
    has_letters = np.zeros(n, dtype=bool)
    binary = np.zeros(n, dtype=np.float64)
    filled = np.flatnonzero(lengths)
    if not len(filled):
        return ScriptInfo(script.tolist(), has_letters, binary)
    ends = np.cumsum(lengths)
    starts = (ends - lengths)[filled]
    low = _buffers(len(classes))[2]
    np.take(_LOW, classes, out=low)
    lo = np.minimum.reduceat(low, starts)
    hi = np.maximum.reduceat(classes, starts)
    one = (lo == hi) & (lo >= 2)  # letters of one class, no control characters
    script[filled[one]] = _SINGLE[hi[one]]
    has_letters[filled] = hi >= 2
    rest = filled[(lo == 1) | (lo >= 2) & (lo != hi)]  # control characters, or mixed letters
    if len(rest):
        counts = np.stack(
            [np.bincount(classes[ends[i] - lengths[i] : ends[i]], minlength=_N) for i in rest]
        )
        script[rest] = scripts_from_counts(counts)
        has_letters[rest] = letter_count(counts) > 0
        binary[rest] = binary_fraction(counts)
    return ScriptInfo(script.tolist(), has_letters, binary)


def scripts_from_counts(counts: np.ndarray) -> list[str]:
    """The dominant ISO 15924 code of each row of ``script_counts`` (see module docstring)."""
    han = _INDEX["Hani"]
    hans, hant = _INDEX["Hans"], _INDEX["Hant"]
    kana, hang = _INDEX["Kana"], _INDEX["Hang"]
    votes = counts.copy()
    votes[:, :2] = 0  # common and binary characters do not vote
    votes[:, han] += counts[:, hans] + counts[:, hant]
    votes[:, hans] = votes[:, hant] = 0
    # Japanese is written with Han and kana together; Korean may mix in Han (hanja)
    votes[:, kana] += np.where(counts[:, kana] > 0, votes[:, han], 0)
    votes[:, hang] += np.where(counts[:, hang] > 0, votes[:, han], 0)
    best = votes.argmax(axis=1)
    s, t = counts[:, hans], counts[:, hant]
    code = np.where(best == kana, _JPAN, best)
    code = np.where(best == han, np.where(s > t, hans, np.where(t > s, hant, han)), code)
    code[votes.max(axis=1) == 0] = _INDEX["Zyyy"]
    return _NAMES[code].tolist()


def binary_fraction(counts: np.ndarray) -> np.ndarray:
    """Fraction of each sampled text that is control characters or U+FFFD."""
    total = counts.sum(axis=1)
    return counts[:, _INDEX["binary"]] / np.maximum(total, 1)


def letter_count(counts: np.ndarray) -> np.ndarray:
    """How many sampled characters of each text belong to some script (are letters)."""
    return counts[:, 2:].sum(axis=1)
