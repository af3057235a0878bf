"""Label JSONL documents with an LLM, producing training data for classifiers.train.

    python -m classifiers.annotate --task edu --in docs.jsonl --out labelled.jsonl \
        --endpoint http://127.0.0.1:8000/v1 --model Qwen/Qwen3-32B
    python -m classifiers.annotate --task domain ... --vllm /models/Qwen3-32B   # on a GPU

Input lines need a ``text`` field (other fields are carried over). Output lines are
``{"text", "label", "annotation"}`` in input order, ready for ``classifiers.train``;
documents the model could not label go to ``<out>.errors.jsonl`` with the reason.

Rubrics:
- edu: the additive 0-5 educational-value rubric of FineWeb-Edu (one point per
  criterion met), in our words, over the first ``--max-chars`` characters.
- domain: the fields of recipes/taxonomy.yaml with their descriptions; the answer is
  constrained to that enum by the JSON schema.
- safety: three independent yes/no flags (toxic, adult, spam); label is the list of
  flags that apply, or ``["ok"]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from classifiers.taxonomy import load_taxonomy
from synth.model_client import ChatRequest, ModelClient, open_client

SYSTEM = "You label documents for a language-model pretraining corpus. Answer in JSON only."


def edu_prompt(text: str) -> str:
    rubric = "\n".join(f"- {k}: {v}" for k, v in load_taxonomy().edu.items())
    return (
        "Below is an extract from a web page. Judge whether it would be useful in an "
        "educational setting for teaching from primary school to university level, "
        "using this additive 5-point scale. Add one point for each criterion met; "
        "the score is the highest level whose description the extract fully meets:\n"
        f"{rubric}\n\nExtract:\n<<<\n{text}\n>>>\n\n"
        'Answer as {"reason": "<at most 60 words>", "score": <0-5>}.'
    )


def domain_prompt(text: str) -> str:
    fields = "\n".join(f"- {k}: {v}" for k, v in load_taxonomy().domain.items())
    return (
        "Which field does this document belong to? Pick exactly one:\n"
        f"{fields}\n\nDocument:\n<<<\n{text}\n>>>\n\n"
        'Answer as {"reason": "<at most 30 words>", "domain": "<field>"}.'
    )


def safety_prompt(text: str) -> str:
    flags = "\n".join(f"- {k}: {v}" for k, v in load_taxonomy().safety.items() if k != "ok")
    return (
        "Does this document carry any of these flags? Judge each one independently:\n"
        f"{flags}\n\nDocument:\n<<<\n{text}\n>>>\n\n"
        'Answer as {"toxic": true|false, "adult": true|false, "spam": true|false}.'
    )


def schema(task: str) -> dict[str, Any]:
    if task == "edu":
        props = {
            "reason": {"type": "string"},
            "score": {"type": "integer", "minimum": 0, "maximum": 5},
        }
        return {"type": "object", "properties": props, "required": ["reason", "score"]}
    if task == "domain":
        props = {
            "reason": {"type": "string"},
            "domain": {"type": "string", "enum": load_taxonomy().labels("domain")},
        }
        return {"type": "object", "properties": props, "required": ["reason", "domain"]}
    if task == "safety":
        props = {k: {"type": "boolean"} for k in ("toxic", "adult", "spam")}
        return {"type": "object", "properties": props, "required": list(props)}
    raise ValueError(f"no annotation rubric for task {task!r}; expected edu, domain or safety")


PROMPTS = {"edu": edu_prompt, "domain": domain_prompt, "safety": safety_prompt}


def label_of(task: str, data: dict[str, Any]) -> str | list[str]:
    if task == "edu":
        return str(data["score"])
    if task == "domain":
        return data["domain"]
    return [k for k in ("toxic", "adult", "spam") if data[k]] or ["ok"]


def request_for(task: str, text: str, max_chars: int) -> ChatRequest:
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": PROMPTS[task](text[:max_chars])},
    ]
    return ChatRequest(messages=messages, schema=schema(task), max_tokens=256)


def _read(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                rec = json.loads(line)
                if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                    raise ValueError(f"{path}:{n}: each line needs a string 'text' field")
                yield n, rec


def annotate(
    client: ModelClient,
    task: str,
    in_path: str | Path,
    out_path: str | Path,
    max_chars: int = 6000,
    batch_size: int = 32,
) -> dict[str, int]:
    """Label every line; returns {"labelled": n, "errors": m}. Writes atomically."""
    schema(task)  # fail early on an unknown task
    out_path = Path(out_path)
    err_path = out_path.with_name(out_path.name + ".errors.jsonl")
    tmp_out, tmp_err = out_path.with_suffix(".tmp"), err_path.with_suffix(".tmp")
    counts = {"labelled": 0, "errors": 0}
    with open(tmp_out, "w", encoding="utf-8") as out, open(tmp_err, "w", encoding="utf-8") as err:
        records = _read(Path(in_path))
        while True:
            batch = list(islice(records, batch_size))
            if not batch:
                break
            results = client.chat([request_for(task, rec["text"], max_chars) for _, rec in batch])
            for (line_no, rec), res in zip(batch, results, strict=True):
                if res.error is not None:
                    err.write(json.dumps({"line": line_no, "error": res.error}) + "\n")
                    counts["errors"] += 1
                    continue
                rec = {
                    **rec,
                    "label": label_of(task, res.data),
                    "annotation": {"model": client.model, **res.data},
                }
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                counts["labelled"] += 1
    os.replace(tmp_out, out_path)
    if counts["errors"]:
        os.replace(tmp_err, err_path)
    else:
        tmp_err.unlink()
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Label JSONL documents with an LLM rubric.")
    ap.add_argument("--task", required=True, choices=sorted(PROMPTS))
    ap.add_argument("--in", dest="inp", required=True, help="JSONL with a text field")
    ap.add_argument("--out", required=True, help="labelled JSONL for classifiers.train")
    ap.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    ap.add_argument("--model", default="", help="model name the endpoint serves")
    ap.add_argument("--vllm", help="model path for in-process vLLM (GPU) instead of HTTP")
    ap.add_argument("--max-chars", type=int, default=6000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--requests-per-second", type=float, default=None)
    ap.add_argument("--timeout-s", type=float, default=120.0)
    args = ap.parse_args(argv)
    options = {}
    if not args.vllm:
        options = {"requests_per_second": args.requests_per_second, "timeout_s": args.timeout_s}
    try:
        client = open_client(args.endpoint, args.model, args.vllm, **options)
        counts = annotate(client, args.task, args.inp, args.out, args.max_chars, args.batch_size)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{counts['labelled']} labelled, {counts['errors']} errors -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
