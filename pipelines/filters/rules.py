"""The filter rules of recipes/web_filters.yaml: a URL blocklist and FineWeb's heuristics.

Each rule looks at one document row and either keeps it (``None``) or drops it with
a ``Drop(code, detail)``; the stage turns that into a quarantine record with reason
``<rule>:<code>``, e.g. ``gopher_quality:short_doc``.

    url_blocklist      ours: the URL's host is (a subdomain of) a listed domain, or the
                       URL contains a listed substring. datatrove's URLFilter is not
                       used: it builds a ``TLDExtract()`` that downloads the public
                       suffix list on first use, and needs tldextract, fasteners and
                       pyahocorasick for what a suffix walk and one regex do here.
    gopher_repetition  datatrove GopherRepetitionFilter   (Gopher, Rae et al. 2021, A1)
    gopher_quality     datatrove GopherQualityFilter
    c4_quality         datatrove C4QualityFilter: drops whole documents (lorem ipsum,
                       curly brackets, too few sentences) and removes lines (javascript,
                       cookie/policy lines, too few words ...) from the ones it keeps
    fineweb_quality    datatrove FineWebQualityFilter

The datatrove rules run exactly the code FineWeb ran (``filter(Document)``), with the
parameters the recipe gives; their English word tokenizer is spaCy's blank ``en``
pipeline (rules only, no model download). The drop detail names the parameter and
threshold that failed and the document's size, since datatrove returns only a code.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.utils.text import split_into_words

from pipelines.web.urls import host_of


@dataclass(frozen=True)
class Drop:
    code: str
    detail: str


def read_list(path: str) -> list[str]:
    """One entry a line; blank lines and ``#`` comments are skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [ln.strip().lower() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class UrlBlocklist:
    name = "url_blocklist"

    def __init__(
        self,
        domains: list[str] = (),
        substrings: list[str] = (),
        domains_file: str | None = None,
        substrings_file: str | None = None,
        domains_file_sha256: str | None = None,  # recorded by the recipe loader
        substrings_file_sha256: str | None = None,
    ) -> None:
        self.domains = {d.lower().strip(".") for d in domains}
        subs = [s.lower() for s in substrings]
        if domains_file:
            self.domains |= {d.strip(".") for d in read_list(domains_file)}
        if substrings_file:
            subs += read_list(substrings_file)
        self.substrings = re.compile("|".join(map(re.escape, subs))) if subs else None

    def check(self, doc: dict[str, Any]) -> Drop | None:
        url = doc.get("url")
        if not url:
            return None
        labels = host_of(url).split(".")
        for i in range(len(labels)):
            suffix = ".".join(labels[i:])
            if suffix in self.domains:
                return Drop("domain", f"host {'.'.join(labels)} is under blocked domain {suffix}")
        if self.substrings is not None:
            m = self.substrings.search(url.lower())
            if m:
                return Drop("substring", f"URL contains blocked substring {m.group(0)!r}")
        return None


# datatrove's reason code -> (our code, the parameter that decided it)
GOPHER_QUALITY_CODES = {
    "gopher_short_doc": ("short_doc", "min_doc_words"),
    "gopher_long_doc": ("long_doc", "max_doc_words"),
    "gopher_below_avg_threshold": ("short_words", "min_avg_word_length"),
    "gopher_above_avg_threshold": ("long_words", "max_avg_word_length"),
    "gopher_too_many_hashes": ("hash_ratio", "max_symbol_word_ratio"),
    "gopher_too_many_ellipsis": ("ellipsis_ratio", "max_symbol_word_ratio"),
    "gopher_too_many_bullets": ("bullet_lines", "max_bullet_lines_ratio"),
    "gopher_too_many_end_ellipsis": ("ellipsis_lines", "max_ellipsis_lines_ratio"),
    "gopher_below_alpha_threshold": ("alpha_words", "max_non_alpha_words_ratio"),
    "gopher_enough_stop_words": ("stop_words", "min_stop_words"),
}
REPETITION_PARAMS = {
    "dup_para_frac": "dup_para_frac",
    "dup_para_char_frac": "dup_para_char_frac",
    "dup_line_frac": "dup_line_frac",
    "dup_line_char_frac": "dup_line_char_frac",
}
C4_PARAMS = {
    "lorem_ipsum": "filter_lorem_ipsum",
    "curly_bracket": "filter_curly_bracket",
    "too_few_sentences": "min_num_sentences",
}
FINEWEB_PARAMS = {
    "line_punct_ratio": "line_punct_thr",
    "short_line_ratio": "short_line_thr",
    "char_dup_ratio": "char_duplicates_ratio",
    "list_ratio": "new_line_ratio",
}


class DatatroveRule:
    """A datatrove filter run on a row: ``filter(Document)`` with the recipe's parameters."""

    FILTERS = {
        "gopher_repetition": GopherRepetitionFilter,
        "gopher_quality": GopherQualityFilter,
        "c4_quality": C4QualityFilter,
        "fineweb_quality": FineWebQualityFilter,
    }

    def __init__(self, name: str, language: str, params: dict[str, Any]) -> None:
        self.name = name
        self.language = language
        try:
            self.filter = self.FILTERS[name](language=language, **params)
        except TypeError as exc:
            raise ValueError(
                f"recipe rule {name!r}: bad parameters {sorted(params)} ({exc}); see the "
                f"arguments of datatrove's {self.FILTERS[name].__name__}"
            ) from exc

    def check(self, doc: dict[str, Any]) -> Drop | None:
        text = doc["text"]
        d = Document(text=text, id=doc["doc_id"], metadata={"url": doc.get("url")})
        result = self.filter.filter(d)
        if result is True:
            if d.text != text:  # C4 keeps the document without its bad lines
                doc["text"] = d.text
            return None
        raw = result[1] if isinstance(result, tuple) else "rejected"
        code, param = self._explain(raw)
        words = len(split_into_words(text, self.language)) if text.strip() else 0
        shape = f"{words} word tokens, {len(text.splitlines())} lines, {len(text)} chars"
        if param is None:
            return Drop(code, f"{raw} (document: {shape})")
        value = getattr(self.filter, param, None)
        if param == "short_line_thr":  # datatrove renames this one on the instance
            value = self.filter.short_line_threshold
        return Drop(code, f"{raw}: {param}={value!r} (document: {shape})")

    def _explain(self, raw: str) -> tuple[str, str | None]:
        if self.name == "gopher_quality":
            return GOPHER_QUALITY_CODES.get(raw, (raw, None))
        if self.name == "gopher_repetition":
            if raw.startswith("top_"):
                return raw, "top_n_grams"
            if raw.startswith("duplicated_"):
                return raw, "dup_n_grams"
            return raw, REPETITION_PARAMS.get(raw)
        if self.name == "c4_quality":
            return raw, C4_PARAMS.get(raw)
        return raw, FINEWEB_PARAMS.get(raw)


RULES = ("url_blocklist", *DatatroveRule.FILTERS)


def build_rule(spec: dict[str, Any], language: str) -> UrlBlocklist | DatatroveRule:
    """A rule from one recipe entry: ``{"rule": <name>, "params": {...}}``."""
    name = spec.get("rule")
    params = dict(spec.get("params") or {})
    if name == "url_blocklist":
        try:
            return UrlBlocklist(**params)
        except TypeError as exc:
            raise ValueError(f"recipe rule 'url_blocklist': bad parameters ({exc})") from exc
    if name in DatatroveRule.FILTERS:
        return DatatroveRule(name, language, params)
    raise ValueError(f"recipe names an unknown rule {name!r}; known rules: {', '.join(RULES)}")
