"""MinHash fuzzy dedup: normalisation parity, the LSH S-curve, clusters, removal, resume.

Inputs are built in tmp_path from the bundled news articles (samples/html/newspaper4k
reference texts, MIT) and from generated token streams whose shingle-set Jaccard
similarity is set by construction and measured exactly.
"""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from datatrove.utils.text import simplify_text
from stages_for_tests import doc_row, output_dir, write_doc_output

from pipelines.dedup.cluster import cluster_sizes, connected_components
from pipelines.dedup.fingerprint import (
    MinhashConfig,
    band_keys,
    minhash_batch,
    normalise,
    params,
    shingle_hashes,
    shingle_set,
    signatures,
    simplified_words,
    tables,
    word_hashes,
)
from pipelines.dedup.minhash import minhash_dedup, minhash_metadata
from pipelines.runner import LocalRunner
from storage import read_shard

PAGES = Path(__file__).resolve().parent.parent / "samples" / "html" / "newspaper4k"
CONFIG = MinhashConfig()


def article(stem: str) -> str:
    return (PAGES / f"{stem}.txt").read_text(encoding="utf-8")


def jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a, CONFIG), shingle_set(b, CONFIG)
    return len(sa & sb) / len(sa | sb)


def token(i: int) -> str:
    """A distinct letters-only word per integer (digits would all normalise to 0)."""
    out = ""
    while True:
        i, r = divmod(i, 26)
        out += chr(97 + r)
        if i == 0:
            return out


# normalisation ----------------------------------------------------------------------
def test_words_match_datatrove_simplify_text():
    texts = [p.read_text(encoding="utf-8") for p in sorted(PAGES.glob("*.txt"))]
    texts += [
        "1,000,000 people; 3.14.15 ok 12a34 x١٢٣٫٤y 12. .5 1..2",
        "Héllo  Wörld — ÇA VA? İstanbul ß ﬁne ΟΔΟΣ οδος\u00a0x\u3000y",
        "a \u0301 b\x00\x01c «quoted» (brackets)",
    ]

    def same_form(w: str) -> str:  # documented differences: Hangul composed, ς = σ
        return unicodedata.normalize("NFC", w).replace("ς", "σ")

    for text in texts:
        ours = [same_form(w) for w in simplified_words(text)]
        theirs = [same_form(w) for w in simplify_text(text).split()]
        assert ours == theirs, text[:60]
    assert simplified_words("Price: 1,000,000 (3.5%)") == ["price", "0", "0", "0"]


def test_short_and_empty_documents_get_no_signature():
    keys, rows = minhash_batch(["", "four words only here", "five words are just enough"], CONFIG)
    assert rows.tolist() == [2]
    assert keys.shape == (1, CONFIG.bands)


# the S-curve ------------------------------------------------------------------------
def test_band_collisions_follow_the_s_curve():
    """Pairs sharing a prefix of m words out of 200 unique ones: Jaccard set exactly."""
    levels, pairs, n_words = [0.5, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95], 300, 200
    shingles = n_words - CONFIG.n_grams + 1
    texts, uid = [], 0
    for j in levels:
        shared = round(2 * shingles * j / (1 + j)) + CONFIG.n_grams - 1
        for _ in range(pairs):
            a = [token(uid + i) for i in range(n_words)]
            b = a[:shared] + [token(uid + n_words + i) for i in range(n_words - shared)]
            uid += 2 * n_words
            texts += [" ".join(a), " ".join(b)]
    p = params(CONFIG)
    sigs = []
    for lo in range(0, len(texts), 200):
        words, doc = word_hashes(*normalise(texts[lo : lo + 200]), p)
        sh, sdoc = shingle_hashes(words, doc, CONFIG, p)
        sigs.append(signatures(sh, sdoc, 200, CONFIG, p)[0])
    sig = np.concatenate(sigs)
    keys = band_keys(sig, CONFIG, p)
    for li, _ in enumerate(levels):
        at = slice(2 * pairs * li, 2 * pairs * (li + 1))
        j = jaccard(texts[at][0], texts[at][1])  # every pair of a level has this Jaccard
        a, b = sig[at][0::2], sig[at][1::2]
        agree = (a == b).mean()  # each permutation's minima agree with probability j
        sd = math.sqrt(j * (1 - j) / (CONFIG.permutations * pairs))
        assert abs(agree - j) <= 4 * sd + 0.005, (j, agree)
        hits = int((keys[at][0::2] == keys[at][1::2]).any(axis=1).sum())
        expect = pairs * CONFIG.candidate_probability(j)
        tol = 4 * math.sqrt(expect * (1 - expect / pairs)) + 2
        assert abs(hits - expect) <= tol, (j, hits, expect)
    assert CONFIG.threshold == pytest.approx(0.719, abs=1e-3)  # FineWeb: (1/14)^(1/8)


def test_unrelated_articles_share_no_bucket():
    texts = [p.read_text(encoding="utf-8") for p in sorted(PAGES.glob("*.txt"))]
    texts = [t for t in texts if "Chia seeds" not in t]  # the one real near-duplicate pair
    keys, rows = minhash_batch(texts, CONFIG)
    assert rows.size >= 20
    for band in range(CONFIG.bands):
        assert np.unique(keys[:, band]).size == rows.size


# clustering -------------------------------------------------------------------------
def test_connected_components_roots_are_smallest_keys():
    a = np.array([9, 3, 7, 20, 21, 5], np.int64)
    b = np.array([3, 7, 1, 21, 22, 5], np.int64)  # chain 9-3-7-1, chain 20-21-22, loop 5
    nodes, roots = connected_components(a, b)
    assert dict(zip(nodes.tolist(), roots.tolist(), strict=True)) == {
        1: 1, 3: 1, 7: 1, 9: 1, 5: 5, 20: 20, 21: 20, 22: 20,
    }  # fmt: skip
    assert cluster_sizes(roots).tolist() == [4, 4, 1, 4, 4, 3, 3, 3]


# the whole pipeline -----------------------------------------------------------------
def corpus() -> tuple[list[list[dict]], dict[str, str]]:
    """Three shards of real articles with copies; returns shards and native_id -> role."""
    cnn, wired, time_ = article("cnn_article"), article("wired_001"), article("time_001")
    footer = "\n\nSubscribe to our newsletter for the latest headlines, every morning."
    other_footer = "\n\n© 2024 Example Media Group. All rights reserved. Terms of use apply."
    uniques = ["arabic_article", "spanish_article", "latvian_article", "cnn_002",
               "fox13now_001", "yna_co_kr", "chinese_article", "thai_article"]  # fmt: skip
    shard0 = [("cnn", cnn + footer), ("chia-a", article("cleveland.com1"))]
    shard0 += [(u, article(u)) for u in uniques[:4]]
    shard1 = [("wired", wired), ("cnn-copy", cnn + footer), ("short", "Breaking news")]
    shard1 += [(u, article(u)) for u in uniques[4:]]
    shard2 = [("cnn-near", cnn + other_footer), ("chia-b", article("video_article_01"))]
    shard2 += [("wired-near", wired.replace("\n", "\n\n") + footer), ("time", time_)]
    role = {"cnn-copy": "cnn", "cnn-near": "cnn", "chia-b": "chia-a", "wired-near": "wired"}
    shards, i = [], 0
    for rows in (shard0, shard1, shard2):
        shards.append([doc_row(nid, text, i=(i := i + 1)) for nid, text in rows])
    return shards, role


def test_copies_and_near_copies_are_removed_with_cluster_attributes(tmp_path):
    shards, role = corpus()
    assert jaccard(shards[0][0]["text"], shards[2][0]["text"]) > 0.9  # changed footer
    source = output_dir(tmp_path / "source")
    write_doc_output(source, shards)
    out, attrs = output_dir(tmp_path / "out"), output_dir(tmp_path / "attrs")
    manifest = minhash_dedup(LocalRunner(processes=2), source, out, attrs)

    by_native = {r["native_id"]: r for rows in shards for r in rows}
    kept = {
        nid
        for s in out.manifest().shards
        for nid in read_shard(out.fs, f"{out.folder}/{s.name}").column("native_id").to_pylist()
    }
    assert kept == set(by_native) - set(role)  # unrelated, short and first copies stay
    quarantine = [
        r
        for s in manifest.quarantine
        for r in read_shard(out.fs, f"{out.folder}/{s.name}").to_pylist()
    ]
    assert {r["native_id"] for r in quarantine} == set(role)
    for r in quarantine:
        assert r["reason"] == "near_duplicate"
        assert by_native[role[r["native_id"]]]["doc_id"] in r["detail"]
    assert [s.name for s in manifest.shards] == [s.name for s in source.manifest().shards]

    # attributes: one shard per input shard, row-aligned, one kept per cluster
    for s, rows in zip(attrs.manifest().shards, shards, strict=True):
        t = pq.read_table(Path(attrs.folder) / s.name).to_pylist()
        assert [a["doc_id"] for a in t] == [r["doc_id"] for r in rows]
        for a, r in zip(t, rows, strict=True):
            nid = r["native_id"]
            keeper = role.get(nid, nid)
            members = [n for n in by_native if role.get(n, n) == keeper]
            assert a["cluster_id"] == by_native[keeper]["doc_id"]
            assert a["cluster_size"] == len(members)
            assert a["kept"] == (nid == keeper)

    meta = minhash_metadata(out)
    assert meta["documents_in"] == sum(len(rows) for rows in shards)
    assert meta["removed"] == len(role) == manifest.counters["near_duplicates_removed"]
    assert meta["clusters"] == 3
    assert meta["removal_rate"] == pytest.approx(len(role) / meta["documents_in"])
    assert meta["too_short"] == 1
    largest = meta["largest_clusters"][0]
    assert largest["size"] == 3
    assert largest["sample_urls"][0] == by_native["cnn"]["url"]  # the kept document first


def test_resumes_after_being_killed_between_passes(tmp_path):
    shards, role = corpus()
    source = output_dir(tmp_path / "source")
    write_doc_output(source, shards)
    out, attrs = output_dir(tmp_path / "out"), output_dir(tmp_path / "attrs")

    class Killed(Exception):
        pass

    def kill_at_bucket_pass(msg: str) -> None:
        if msg.startswith("dedup/minhash_bucket"):
            raise Killed(msg)

    with pytest.raises(Killed):
        minhash_dedup(LocalRunner(processes=1), source, out, attrs, progress=kill_at_bucket_pass)
    assert not out.has_manifest()
    said: list[str] = []
    manifest = minhash_dedup(LocalRunner(processes=1), source, out, attrs, progress=said.append)
    assert "dedup/minhash_fingerprint: 3 of 3 tasks already done, resuming" in said
    assert not any(m.startswith("dedup/minhash_fingerprint: 1/3") for m in said)
    assert manifest.counters["near_duplicates_removed"] == len(role)

    said.clear()  # a finished run is all skips
    again = minhash_dedup(LocalRunner(processes=1), source, out, attrs, progress=said.append)
    assert all("already done" in m for m in said), said
    assert again.digest() == manifest.digest()


def test_fold_table_covers_every_mark_and_decomposable_letter():
    """tables() only looks below U+30000 and at U+E0000..E0FFF; nothing else folds."""
    import sys

    fold, _ = tables()
    outside = [*range(0x30000, 0xE0000), *range(0xE1000, sys.maxunicode + 1)]
    for cp in outside:
        ch = chr(cp)
        assert unicodedata.category(ch) != "Mn" and unicodedata.is_normalized("NFD", ch.lower())
    assert (fold[outside] == np.array([ord(chr(c).lower()) for c in outside])).all()
    assert fold[ord("É")] == ord("e") and fold[0x0301] == fold[-1]  # a mark is dropped


def test_a_changed_input_shard_is_fingerprinted_again_alone(tmp_path):
    shards, role = corpus()
    source = output_dir(tmp_path / "source")
    write_doc_output(source, shards)
    out, attrs = output_dir(tmp_path / "out"), output_dir(tmp_path / "attrs")
    minhash_dedup(LocalRunner(processes=1), source, out, attrs)

    shards[2] = [r for r in shards[2] if r["native_id"] != "cnn-near"]
    write_doc_output(source, shards)
    said: list[str] = []
    manifest = minhash_dedup(LocalRunner(processes=1), source, out, attrs, progress=said.append)
    assert "dedup/minhash_fingerprint: 2 of 3 tasks already done, resuming" in said
    assert manifest.counters["near_duplicates_removed"] == len(role) - 1
    sizes = {
        a["doc_id"]: a["cluster_size"]
        for s in attrs.manifest().shards
        for a in pq.read_table(Path(attrs.folder) / s.name).to_pylist()
    }
    assert sizes[shards[0][0]["doc_id"]] == 2  # cnn + its exact copy, the near copy is gone
