"""MinHash fingerprints of a batch of documents, vectorised with numpy (no I/O here).

A straight line of named steps, each over the whole batch at once:

  normalise   datatrove's ``simplify_text`` (FineWeb) on a code-point array: each
              code point is folded by one table look-up (lowercase, NFD, combining
              marks (Mn) dropped: E-acute -> e; final sigma -> sigma), each number
              (datatrove's ``NUMBERS_PATTERN``, greedy, left to right) becomes ``0``,
              and datatrove's PUNCTUATION (not its terminal punctuation, which it
              keeps) and every Unicode space separate words. The words equal
              datatrove's up to code-point form: Hangul stays composed (NFC) and
              final and medial sigma are one letter (tests/test_minhash.py checks this).
  words       maximal runs of non-separators (whitespace tokenisation after
              simplification, like datatrove with a whitespace tokenizer).
  shingles    word ``n_grams`` (5) that do not cross a document boundary.
  signature   the minimum of ``bands * rows`` (14 x 8 = 112) hash permutations over
              each document's shingle set, 64-bit.
  bands       each band of ``rows`` minima folded into one 64-bit bucket key.

Hash family, and why:
  * character  ``G[c]``: fmix64 (MurmurHash3's finaliser) of the folded code point.
  * word       ``sum_j G[c_j] * P^j`` mod 2^64, P odd: a polynomial hash; one cumsum
               over the batch gives every word's hash (times ``P^-start``), so no
               Python loop touches a word.
  * shingle    ``fmix64(sum_k W[i+k] * C[k])``: order-sensitive, then fully mixed.
  * permutation ``a_k * x + b_k`` mod 2^64, ``a_k`` odd: a bijection of 64-bit values.
               Its high bits, which decide the minimum, behave as a pairwise
               independent family (multiply-add-shift, Dietzfelbinger) on the already
               mixed shingle hashes. The textbook ``(a*x + b) mod (2^61 - 1)`` needs
               128-bit products that numpy lacks (datatrove's uint64 version wraps
               before the modulo anyway); wrapping arithmetic costs two passes over
               the (112 x shingles) block plus the minimum. tests/test_minhash.py
               checks that band collisions follow ``1 - (1 - s^rows)^bands``.
  * band key   ``fmix64(sum_r m_r * D[r])``: a 64-bit key per band instead of the 8
               minima; two unrelated documents share a key by chance with
               probability 2^-64 per band.
All constants come from a splitmix64 stream seeded by ``MinhashConfig.seed``: pure
integer arithmetic, identical on every machine and numpy version. The tables (fold,
flags, character hashes: ~15 MB) are built once per process in under a second.

Known limit: scripts written without spaces (Chinese, Japanese, Thai) give one
"word" per phrase, as datatrove's whitespace tokenizer does, so near copies in those
scripts are found only when whole phrases repeat.
"""

from __future__ import annotations

import functools
import itertools
import sys
import unicodedata
from dataclasses import dataclass

import numpy as np
from datatrove.utils.text import PUNCTUATION

U64 = np.uint64
MASK64 = (1 << 64) - 1
DECIMAL_SEPARATORS = ".,\u060c\u066b\u2396\u2397\u2398"  # as in datatrove's NUMBERS_PATTERN
CHUNK_ROWS = 2048  # shingles per (permutations x shingles) block: 1.8 MB, near L2 size
BATCH_CHARS = 1 << 18  # code points per sub-batch: ~120 docs of 2 KB keep arrays in cache


@dataclass(frozen=True)
class MinhashConfig:
    """FineWeb's MinHash parameters by default: 5-grams, 14 bands x 8 rows (112)."""

    n_grams: int = 5
    bands: int = 14
    rows: int = 8
    seed: int = 1

    def __post_init__(self) -> None:
        for name in ("n_grams", "bands", "rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"MinhashConfig.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def permutations(self) -> int:
        return self.bands * self.rows

    @property
    def threshold(self) -> float:
        """Jaccard similarity where a pair becomes a candidate with probability ~1/2."""
        return (1 / self.bands) ** (1 / self.rows)

    def candidate_probability(self, jaccard: float) -> float:
        """Chance that two documents with this shingle Jaccard share a band key."""
        return 1 - (1 - jaccard**self.rows) ** self.bands


# constants ----------------------------------------------------------------------
def splitmix64(seed: int, n: int) -> np.ndarray:
    """``n`` pseudo-random 64-bit integers from ``seed`` (Vigna's splitmix64)."""
    out, x = [], seed & MASK64
    for _ in range(n):
        x = (x + 0x9E3779B97F4A7C15) & MASK64
        z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        out.append(z ^ (z >> 31))
    return np.array(out, dtype=U64)


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place on a uint64 array (returned)."""
    x ^= x >> U64(33)
    x *= U64(0xFF51AFD7ED558CCD)
    x ^= x >> U64(33)
    x *= U64(0xC4CEB9FE1A85EC53)
    x ^= x >> U64(33)
    return x


@dataclass(frozen=True)
class _Params:
    perm_a: np.ndarray  # (P, 1) odd
    perm_b: np.ndarray  # (P, 1)
    shingle: np.ndarray  # (n_grams,) odd
    band: np.ndarray  # (rows,) odd
    char: np.ndarray  # (DROPPED + 1,) fmix64 of each folded code point; 0 for separators
    poly: int  # odd multiplier of the word hash


_SEP, _DIGIT, _MARK, _DECSEP = 1, 2, 4, 8
DROPPED = sys.maxunicode + 1  # what a combining mark folds to


@functools.cache
def tables() -> tuple[np.ndarray, np.ndarray]:
    """(fold, flags): the folded form of every code point, and flags of folded ones."""
    n = sys.maxunicode + 1
    every = np.arange(n, dtype=np.uint32).tobytes().decode("utf-32-le", "surrogatepass")
    lower = every.replace("\u0130", "i").lower()  # U+0130: the one 1 -> 2 lowercase
    fold = np.frombuffer(lower.encode("utf-32-le", "surrogatepass"), np.uint32).copy()
    # every combining mark and decomposable letter lies below U+30000 or in the
    # variation selectors supplement (U+E0100..E01EF): Unicode 15, checked in a test
    for i in itertools.chain(range(0x30000), range(0xE0000, 0xE1000)):
        if _is_mark(lower[i]):
            fold[i] = DROPPED
        elif not unicodedata.is_normalized("NFD", lower[i]):
            base = [c for c in unicodedata.normalize("NFD", lower[i]) if not _is_mark(c)]
            if len(base) == 1:  # keep the base letter; Hangul (letters, no marks) stays
                fold[i] = ord(base[0])
    fold[0x03C2] = 0x03C3  # final sigma -> sigma
    fold = np.append(fold, np.uint32(DROPPED))

    chars = np.arange(n + 1, dtype=np.uint32)
    chars[DROPPED] = 0
    view = chars.view("U1")
    flags = np.where(np.strings.isspace(view), _SEP, 0).astype(np.uint8)
    flags[[ord(c) for c in set(PUNCTUATION)]] |= _SEP
    flags[np.strings.isdecimal(view)] |= _DIGIT  # str.isdecimal is category Nd
    flags[[ord(c) for c in DECIMAL_SEPARATORS]] |= _DECSEP
    flags[DROPPED] = _MARK
    return fold, flags


def _is_mark(c: str) -> bool:
    return unicodedata.category(c) == "Mn"


@functools.cache
def params(config: MinhashConfig) -> _Params:
    p, n = config.permutations, config.n_grams
    raw = splitmix64(config.seed, 2 * p + n + config.rows + 2)
    odd = raw | U64(1)
    _, flags = tables()
    char = fmix64(np.arange(DROPPED + 1, dtype=U64) ^ raw[-1])
    char[(flags & _SEP) != 0] = 0
    return _Params(
        perm_a=odd[:p, None],
        perm_b=raw[p : 2 * p, None],
        shingle=odd[2 * p : 2 * p + n],
        band=odd[2 * p + n : 2 * p + n + config.rows],
        char=char,
        poly=int(odd[-2]),
    )


@functools.lru_cache(maxsize=2)
def _powers(poly: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """poly^j and poly^-j mod 2^64 for j < n (n a power of two: few sizes ever asked)."""
    inv = pow(poly, -1, 1 << 64)
    up = np.full(n, poly, U64)
    down = np.full(n, inv, U64)
    up[0] = down[0] = 1
    return np.cumprod(up, dtype=U64), np.cumprod(down, dtype=U64)


# the steps --------------------------------------------------------------------------
def normalise(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Folded code points of the batch (docs joined by ``\\n``) and each doc's start."""
    fold, flags = tables()
    joined = "\n".join(texts)
    cp = fold[np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), np.uint32)]
    starts = np.zeros(len(texts), np.int64)
    np.cumsum([len(t) + 1 for t in texts[:-1]], out=starts[1:])

    f = flags[cp]
    drop = (f & _MARK) != 0
    digits = np.flatnonzero(f & _DIGIT)
    if digits.size:
        first = np.ones(digits.size, bool)
        first[1:] = digits[1:] != digits[:-1] + 1
        run_start = digits[first]
        run_end = digits[np.append(first[1:], True)]  # inclusive
        # a run continues the previous one's number when exactly one decimal separator
        # sits between them; the regex then takes (head, tail) pairs left to right
        linked = np.zeros(run_start.size, bool)
        linked[1:] = (run_start[1:] == run_end[:-1] + 2) & (
            (f[np.minimum(run_end[:-1] + 1, cp.size - 1)] & _DECSEP) != 0
        )
        idx = np.arange(run_start.size)
        chain_pos = idx - np.maximum.accumulate(np.where(linked, 0, idx))
        tail = linked & (chain_pos % 2 == 1)
        drop[digits] = True
        heads = run_start[~tail]
        drop[heads] = False
        drop[run_start[tail] - 1] = True
        cp[heads] = ord("0")
    if drop.any():
        kept = np.concatenate(([0], np.cumsum(~drop)))
        starts = kept[starts]
        cp = cp[~drop]
    return cp, starts


def word_hashes(cp: np.ndarray, starts: np.ndarray, p: _Params) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hash of every word, in order, and the document each word belongs to."""
    g = p.char[cp]  # 0 on separators
    is_word = g != 0
    first = is_word.copy()
    first[1:] &= ~is_word[:-1]
    last = is_word.copy()
    last[:-1] &= ~is_word[1:]
    word_start, word_end = np.flatnonzero(first), np.flatnonzero(last)  # end inclusive
    if word_start.size == 0:
        return np.zeros(0, U64), np.zeros(0, np.int64)
    up, down = _powers(p.poly, 1 << max(BATCH_CHARS.bit_length(), cp.size.bit_length()))
    g *= up[: cp.size]
    cs = np.cumsum(g, dtype=U64)
    h = cs[word_end]
    inner = word_start > 0
    h[inner] -= cs[word_start[inner] - 1]
    h *= down[word_start]
    doc = np.searchsorted(starts, word_start, side="right") - 1
    return h, doc


def shingle_hashes(
    words: np.ndarray, doc: np.ndarray, config: MinhashConfig, p: _Params
) -> tuple[np.ndarray, np.ndarray]:
    """Hash of every word n-gram inside one document, and that document's index."""
    n = config.n_grams
    m = words.size - n + 1
    if m <= 0:
        return np.zeros(0, U64), np.zeros(0, np.int64)
    s = words[:m] * p.shingle[0]
    tmp = np.empty_like(s)
    for k in range(1, n):
        np.multiply(words[k : k + m], p.shingle[k], out=tmp)
        s += tmp
    inside = doc[:m] == doc[n - 1 :]
    return fmix64(s[inside]), doc[:m][inside]


def signatures(
    shingles: np.ndarray, doc: np.ndarray, n_docs: int, config: MinhashConfig, p: _Params
) -> tuple[np.ndarray, np.ndarray]:
    """(docs with shingles x permutations) minima, and which documents those rows are."""
    sig = np.full((n_docs, config.permutations), np.iinfo(U64).max, U64)
    buf = np.empty((config.permutations, CHUNK_ROWS), U64)
    for lo in range(0, shingles.size, CHUNK_ROWS):
        hi = min(lo + CHUNK_ROWS, shingles.size)
        block = buf[:, : hi - lo]  # (permutations x shingles)
        np.multiply(p.perm_a, shingles[None, lo:hi], out=block)
        block += p.perm_b
        d = doc[lo:hi]
        seg = np.flatnonzero(np.concatenate(([True], d[1:] != d[:-1])))
        docs = d[seg]
        sig[docs] = np.minimum(sig[docs], np.minimum.reduceat(block, seg, axis=1).T)
    has = np.zeros(n_docs, bool)
    has[doc] = True
    rows = np.flatnonzero(has)
    return sig[rows], rows


def band_keys(sig: np.ndarray, config: MinhashConfig, p: _Params) -> np.ndarray:
    """(docs x bands) 64-bit bucket keys, one per band of ``rows`` minima."""
    bands = sig.reshape(sig.shape[0], config.bands, config.rows)
    return fmix64((bands * p.band).sum(axis=2, dtype=U64))


def minhash_batch(texts: list[str], config: MinhashConfig) -> tuple[np.ndarray, np.ndarray]:
    """Band keys (docs with >= n_grams words x bands) and the batch rows they belong to.

    Works through sub-batches of about ``BATCH_CHARS`` code points (a longer document
    goes alone), so the intermediate arrays stay in cache and memory stays bounded.
    """
    p = params(config)
    keys, rows = [np.zeros((0, config.bands), U64)], [np.zeros(0, np.int64)]
    lo = 0
    while lo < len(texts):
        hi, size = lo + 1, len(texts[lo])
        while hi < len(texts) and size + len(texts[hi]) <= BATCH_CHARS:
            size += len(texts[hi])
            hi += 1
        cp, starts = normalise(texts[lo:hi])
        words, doc = word_hashes(cp, starts, p)
        shingles, sdoc = shingle_hashes(words, doc, config, p)
        sig, sub_rows = signatures(shingles, sdoc, hi - lo, config, p)
        keys.append(band_keys(sig, config, p))
        rows.append(sub_rows + lo)
        lo = hi
    return np.concatenate(keys), np.concatenate(rows)


def shingle_set(text: str, config: MinhashConfig) -> set[int]:
    """The shingle hashes of one document (for exact Jaccard checks in tests/benches)."""
    p = params(config)
    words, doc = word_hashes(*normalise([text]), p)
    return set(shingle_hashes(words, doc, config, p)[0].tolist())


def simplified_words(text: str) -> list[str]:
    """The words ``normalise`` produces for one text, as strings (for parity checks)."""
    cp, _ = normalise([text])
    _, flags = tables()
    cp = np.where(flags[cp] & _SEP, ord(" "), cp).astype(np.uint32)
    return cp.tobytes().decode("utf-32-le", "surrogatepass").split()
