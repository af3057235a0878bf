"""The Qwen3 tokenizer: known ids, round trips, and the tiktoken fast path == HF tokenizers.

The identity is checked on real text in many scripts (the bundled news pages, 532
UDHR paragraphs in samples/text, Python source from the standard library) and on
adversarial strings, against HF ``tokenizers`` running the same tokenizer.json.
"""

from __future__ import annotations

import json
import sysconfig
import unicodedata
from pathlib import Path

import pytest

from pipelines.tokens.tokenizer import Tokenizer, fast_path_blocker, qwen3, qwen3_tokenizer_path

ROOT = Path(__file__).resolve().parent.parent
NEWS = sorted((ROOT / "samples/html/newspaper4k").glob("*.txt"))
UDHR = ROOT / "samples/text/udhr_paragraphs.jsonl"

ADVERSARIAL = [
    "👩‍👩‍👧‍👦 family, 🇺🇦🇯🇵 flags, 👍🏽 tones, ❤️‍🔥, 🫠",
    "cafe\u0301 vs café, A\u030a, \u1100\u1161\u11a8 (jamo), Tie\u0302\u0301ng Vie\u0323\u0302t",
    unicodedata.normalize("NFD", "Ελληνικά Ῥόδος, Tiếng Việt, Ångström, 한국어 텍스트"),
    "1" * 1000 + " 3.14159265358979 1,000,000 ٠١٢٣٤٥ ０１２３ ①②",
    "   \n\n\t\t  \r\n\r\n      x  \u3000\u00a0\u2028\u0085 \u200b\ufeff end   ",
    "a" * 5000 + " " + "ab" * 3000,
    "mixed עברית and العربية with English, 中文和日本語のテキスト, ไทย, မြန်မာ",
    "def f(x):\n\tif x:\n\t\treturn {'k': [1, 2]}  # comment\n\n\n    pass\n",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE ’s",
    "tabs\t\tand\x00nul\x01control\x7f chars",
]
SPECIAL_TEXT = "a <|endoftext|> b <think>reason</think> c <|im_start|>user<|im_end|>"


@pytest.fixture(scope="module")
def fast() -> Tokenizer:
    return qwen3()


@pytest.fixture(scope="module")
def hf() -> Tokenizer:
    return qwen3("hf")


def corpus() -> list[str]:
    texts = [p.read_text(encoding="utf-8") for p in NEWS]
    texts += [json.loads(line)["text"] for line in UDHR.read_text(encoding="utf-8").splitlines()]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = sorted(stdlib.glob("*.py"))[::3][:80]
    texts += [p.read_text(encoding="utf-8", errors="replace") for p in code]
    return texts


def test_corpus_is_real_and_multiscript():
    texts = corpus()
    scripts = {unicodedata.name(c, "?").split()[0] for t in texts for c in t if c.isalpha()}
    # Latin, Arabic, CJK, Hiragana, Thai, Myanmar, Hangul, Cyrillic, Devanagari, Greek ...
    assert {"LATIN", "ARABIC", "CJK", "HIRAGANA", "THAI", "MYANMAR", "HANGUL"} <= scripts
    assert {"CYRILLIC", "DEVANAGARI", "GREEK", "ETHIOPIC", "TAMIL", "HEBREW"} <= scripts
    assert len(texts) > 600


def test_qwen3_shape(fast: Tokenizer):
    assert fast.backend == "tiktoken"
    assert fast.vocab_size == 151669
    assert fast.eot_id == 151643
    assert fast.special_tokens["<think>"] == 151667
    assert fast.special_tokens["</think>"] == 151668
    assert len(fast.sha256) == 64


def test_known_ids(fast: Tokenizer, hf: Tokenizer):
    vocab = json.loads((qwen3_tokenizer_path().parent / "vocab.json").read_text())
    for tok in (fast, hf):
        assert tok.encode("Hello world") == [vocab["Hello"], vocab["Ġworld"]] == [9707, 1879]
        assert tok.encode(" ") == [220] and tok.encode("\n") == [198]
        assert tok.encode("2024") == [vocab[d] for d in "2024"]  # digits one by one
        assert tok.encode("<think>x</think>", allowed_special="all") == [151667, 87, 151668]
        assert tok.encode("<think>", allowed_special={"<think>"}) == [151667]
        assert list(tok.encode_doc("Hello world")) == [9707, 1879, 151643]


def test_fast_path_equals_hf_on_real_corpus(fast: Tokenizer, hf: Tokenizer):
    texts = corpus()
    mismatched = [t[:60] for t in texts if fast.encode(t) != hf.encode(t)]
    assert mismatched == []
    docs = [t[:60] for t in texts if fast.encode_doc(t).tolist() != fast.encode(t) + [151643]]
    assert docs == []
    for tok in (fast, hf):  # the batch form (what mix/scan stores) == encode_doc per document
        offsets, ids = tok.encode_docs([*texts[:50], ""])
        assert len(offsets) == 52 and offsets[-1] == len(ids)
        for i, t in enumerate([*texts[:50], ""]):
            assert ids[offsets[i] : offsets[i + 1]].tolist() == fast.encode_doc(t).tolist()
    assert sum(len(fast.encode(t)) for t in texts) > 300_000


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_adversarial_identity_and_round_trip(fast: Tokenizer, hf: Tokenizer, text: str):
    ids = fast.encode(text)
    assert ids == hf.encode(text)
    assert fast.decode(ids) == unicodedata.normalize("NFC", text)
    assert hf.decode(ids) == unicodedata.normalize("NFC", text)


def test_lone_surrogates_become_replacement_characters(fast: Tokenizer, hf: Tokenizer):
    text = "a \ud800 b \ud83d\ude00 c"  # a lone surrogate, and a pair for 😀
    ids = fast.encode(text)
    assert ids == hf.encode(text) == fast.encode("a \ufffd b 😀 c")
    assert fast.encode_doc(text).tolist() == ids + [151643]


def test_nfc_and_nfd_give_the_same_ids(fast: Tokenizer, hf: Tokenizer):
    text = "Ελληνικά Ῥόδος, Tiếng Việt, Ångström, 한국어, café"
    nfd = unicodedata.normalize("NFD", text)
    assert nfd != text
    assert fast.encode(nfd) == fast.encode(text) == hf.encode(nfd)


def test_special_token_text_stays_text_unless_allowed(fast: Tokenizer, hf: Tokenizer):
    plain = fast.encode(SPECIAL_TEXT)
    assert plain == hf.encode(SPECIAL_TEXT)
    assert not set(plain) & set(fast.special_tokens.values())
    assert fast.decode(plain) == SPECIAL_TEXT
    assert fast.encode_doc(SPECIAL_TEXT).tolist() == plain + [151643]
    assert hf.encode_doc(SPECIAL_TEXT).tolist() == plain + [151643]
    allowed = fast.encode(SPECIAL_TEXT, allowed_special="all")
    assert allowed == hf.encode(SPECIAL_TEXT, allowed_special="all")
    assert [i for i in allowed if i >= 151643] == [151643, 151667, 151668, 151644, 151645]
    only_think = fast.encode(SPECIAL_TEXT, allowed_special={"<think>", "</think>"})
    assert [i for i in only_think if i >= 151643] == [151667, 151668]
    # HF's own added-token matching agrees with the verbatim split
    full = hf._hf_pair[1].encode(SPECIAL_TEXT, add_special_tokens=False).ids
    assert full == allowed
    with pytest.raises(ValueError, match="not special tokens"):
        fast.encode("x", allowed_special={"<nope>"})


def test_other_tokenizer_json_falls_back_to_hf(tmp_path: Path, fast: Tokenizer):
    spec = json.loads(qwen3_tokenizer_path().read_text(encoding="utf-8"))
    spec["normalizer"] = {"type": "NFKC"}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    assert "NFKC" in fast_path_blocker(spec)
    tok = Tokenizer(path)
    assert tok.backend == "hf" and tok.sha256 != fast.sha256
    assert tok.encode("ﬁ ①") != fast.encode("ﬁ ①")  # NFKC folds the ligature and circled one
    assert tok.encode("ﬁ ①") == tok.encode("fi 1")
    with pytest.raises(ValueError, match="fast path cannot run it"):
        Tokenizer(path, backend="tiktoken")
