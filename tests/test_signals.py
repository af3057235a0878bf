"""Heuristic text signals: values on texts whose answers can be counted by hand, and the
SignalsTagger stage writing row-aligned attribute shards through the runner."""

from __future__ import annotations

import pytest
from stages_for_tests import doc_row, output_dir, shard_tasks, write_doc_output

from classifiers.signals import SignalsTagger, text_signals
from pipelines.runner import LocalRunner
from storage import read_shard
from storage.schema import check_aligned


def test_lengths_and_character_ratios():
    s = text_signals("Hello WORLD 2024\n\nsecond line #tag ...")
    assert (s["n_chars"], s["n_words"], s["n_lines"]) == (38, 7, 2)
    assert s["digit_frac"] == pytest.approx(4 / 38)
    assert s["upper_frac"] == pytest.approx(6 / 23)  # H + WORLD over 23 letters
    assert s["symbol_ratio"] == pytest.approx(2 / 7)  # one '#', one '...'
    assert s["alpha_word_frac"] == pytest.approx(5 / 7)  # "2024" and "..." have no letter
    assert s["ellipsis_line_frac"] == pytest.approx(1 / 2)


def test_repeated_lines_paragraphs_and_ngrams():
    para = "the quick brown fox jumps over the lazy dog"
    s = text_signals(f"{para}\n\n{para}\n\nsomething else entirely")
    assert s["dup_line_frac"] == pytest.approx(1 / 3)
    assert s["dup_para_frac"] == pytest.approx(1 / 3)
    assert s["dup_para_char_frac"] == pytest.approx(len(para) / (2 * len(para) + 23))
    words = 2 * sum(len(w) for w in para.split())
    total = words + len("somethingelseentirely")
    assert s["dup_5gram_char_frac"] == pytest.approx(words / total)
    assert s["top_2gram_char_frac"] == pytest.approx(2 * len("thequick") / total)
    fresh = text_signals("every word here is different from all of the others")
    assert fresh["dup_5gram_char_frac"] == 0.0 and fresh["top_2gram_char_frac"] == 0.0


def test_stopwords_pick_the_language_of_the_text():
    en = text_signals("It was the best of times and it was the worst of times, with them.")
    assert en["stop_lang"] == "en" and en["en_stop_count"] == 6 and en["stop_frac"] > 0.5
    de = text_signals("Der Hund ist nicht in dem Haus, aber die Katze ist noch da.")
    assert de["stop_lang"] == "de" and de["en_stop_count"] == 0
    es = text_signals("El perro no está en la casa, pero el gato sí está con nosotros.")
    assert es["stop_lang"] == "es"
    assert text_signals("")["stop_lang"] is None and text_signals(None)["n_chars"] == 0


def test_bounded_sample_keeps_exact_lengths():
    s = text_signals("word " * 50_000, max_chars=1000)
    assert s["n_words"] == 50_000 and s["n_chars"] == 250_000
    assert s["dup_10gram_char_frac"] == 1.0


def test_signals_stage_writes_aligned_attribute_shards(tmp_path):
    docs = output_dir(tmp_path / "docs")
    rows = [
        doc_row("a", "The cat sat on the mat."),
        doc_row("b", "", 1),
        doc_row("c", "\x00\x01\x02 binary", 2),
    ]
    write_doc_output(docs, [rows[:2], rows[2:]])
    out = output_dir(tmp_path / "signals")
    manifest = LocalRunner(1).run_over(SignalsTagger(), docs, out)
    assert manifest.kind == "attributes" and manifest.counters["records_in"] == 3
    assert manifest.inputs == [{"path": docs.uri, "digest": docs.manifest().digest()}]
    for task in shard_tasks(docs):
        check_aligned(
            read_shard(docs.fs, task.input), read_shard(out.fs, out.shard_path(task.part))
        )
    first = read_shard(out.fs, out.shard_path("part-00000")).to_pylist()
    assert first[0]["n_words"] == 6 and first[0]["stop_lang"] == "en"
    assert first[1]["n_chars"] == 0 and first[1]["stop_lang"] is None
