"""The LLM client over real HTTP, against a small OpenAI-compatible server on 127.0.0.1.

The server stands in for a remote GPU service (vLLM / SGLang behind the OpenAI API);
everything on our side runs for real: urllib, JSON bodies, status codes, retries,
timeouts, schema-checked answer parsing, and the annotate command writing labelled
JSONL that the training command accepts.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from classifiers.annotate import annotate
from classifiers.annotate import main as annotate_main
from classifiers.train import read_labelled
from synth.model_client import (
    AnswerError,
    ChatRequest,
    OpenAIClient,
    open_client,
    parse_answer,
)

EDU_SCHEMA = {
    "type": "object",
    "properties": {
        "reason": {"type": "string"},
        "score": {"type": "integer", "minimum": 0, "maximum": 5},
    },
    "required": ["reason", "score"],
}


class Stub(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions; behaviour is steered by markers in the prompt."""

    calls: list[dict] = []
    fail_first = 0  # this many requests get HTTP 500 first
    lock = threading.Lock()

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        with Stub.lock:
            Stub.calls.append(
                {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
            )
            failing = Stub.fail_first > 0
            Stub.fail_first -= failing
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": f"no route {self.path}"})
        if failing:
            return self._send(500, {"error": "overloaded"})
        if "SLOW" in prompt:
            time.sleep(1.5)
        if "FORBIDDEN" in prompt:
            return self._send(400, {"error": "prompt rejected"})
        if "GARBAGE" in prompt:
            content = "I think it is quite educational."
        elif "Which field" in prompt:
            content = json.dumps(
                {"reason": "numbers", "domain": "math" if "sum" in prompt else "law"}
            )
        else:  # edu rubric: score = number of sentences in the extract, capped at 5
            extract = prompt.split("<<<")[1].split(">>>")[0]
            score = min(5, len(re.findall(r"[.!?]", extract)))
            content = "```json\n" + json.dumps({"reason": "counted", "score": score}) + "\n```"
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    Stub.calls, Stub.fail_first = [], 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def _edu(text):
    return ChatRequest(
        messages=[{"role": "user", "content": f"rate <<<{text}>>>"}], schema=EDU_SCHEMA
    )


def test_batch_is_answered_in_order_with_parsed_json(server, monkeypatch):
    monkeypatch.setenv("STUB_KEY", "sk-test")
    client = OpenAIClient(server, "stub-model", api_key_env="STUB_KEY", concurrency=4)
    texts = ["One.", "One. Two.", "One. Two. Three.", "A. B. C. D. E. F. G."]
    results = client.chat([_edu(t) for t in texts])
    assert [r.data["score"] for r in results] == [1, 2, 3, 5]
    assert all(r.error is None and r.attempts == 1 for r in results)
    sent = Stub.calls[0]
    assert sent["auth"] == "Bearer sk-test" and sent["body"]["model"] == "stub-model"
    assert sent["body"]["response_format"]["json_schema"]["schema"] == EDU_SCHEMA


def test_server_errors_are_retried_with_backoff(server):
    Stub.fail_first = 2
    client = OpenAIClient(server, "m", backoff_s=0.05, max_retries=3, concurrency=1)
    start = time.monotonic()
    [result] = client.chat([_edu("One. Two.")])
    assert result.error is None and result.data["score"] == 2
    assert result.attempts == 3 and len(Stub.calls) == 3
    assert time.monotonic() - start >= 0.05 + 0.1  # two waits, doubling


def test_retries_run_out_into_an_error_result_not_an_exception(server):
    Stub.fail_first = 10
    client = OpenAIClient(server, "m", backoff_s=0.01, max_retries=2)
    [result] = client.chat([_edu("One.")])
    assert result.data is None and "HTTP 500" in result.error and result.attempts == 3


def test_client_errors_are_not_retried(server):
    client = OpenAIClient(server, "m", backoff_s=0.01)
    [result] = client.chat([_edu("FORBIDDEN text")])
    assert "HTTP 400" in result.error and "prompt rejected" in result.error
    assert result.attempts == 1


def test_a_slow_server_times_out_cleanly(server):
    client = OpenAIClient(server, "m", timeout_s=0.3, max_retries=1, backoff_s=0.01)
    start = time.monotonic()
    [result] = client.chat([_edu("SLOW. answer.")])
    assert result.data is None and "within 0.3s" in result.error
    assert time.monotonic() - start < 1.4  # two attempts of 0.3 s, not the server's 1.5 s


def test_answers_that_are_not_schema_json_are_errors(server):
    client = OpenAIClient(server, "m", max_retries=1, backoff_s=0.01)
    [result] = client.chat([_edu("GARBAGE")])
    assert "no JSON in answer" in result.error and result.attempts == 2
    with pytest.raises(AnswerError, match=r"\$.score: 7 is above 5"):
        parse_answer('Sure! {"reason": "x", "score": 7} hope that helps', EDU_SCHEMA)
    with pytest.raises(AnswerError, match="missing required key 'score'"):
        parse_answer('{"reason": "x"}', EDU_SCHEMA)


def test_rate_limit_spaces_request_starts(server):
    client = OpenAIClient(server, "m", requests_per_second=20, concurrency=4)
    start = time.monotonic()
    client.chat([_edu("One.") for _ in range(5)])
    assert time.monotonic() - start >= 4 / 20


def test_vllm_backend_is_optional_on_a_cpu_machine():
    with pytest.raises(RuntimeError, match="needs `pip install vllm` on a GPU machine"):
        open_client(vllm_model="/models/none")
    with pytest.raises(ValueError, match="endpoint"):
        open_client()


def test_annotate_writes_training_data_and_reports_failures(server, tmp_path):
    docs = tmp_path / "docs.jsonl"
    lines = [
        {"text": "The sum of two and two is four.", "id": 1},
        {"text": "FORBIDDEN stuff", "id": 2},
        {"text": "A contract binds the parties. It is signed.", "id": 3},
    ]
    docs.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "domain.jsonl"
    client = OpenAIClient(server, "stub-model", backoff_s=0.01, max_retries=1)
    assert annotate(client, "domain", docs, out, batch_size=2) == {"labelled": 2, "errors": 1}
    labelled = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["id"], x["label"]) for x in labelled] == [(1, "math"), (3, "law")]
    assert labelled[0]["annotation"]["model"] == "stub-model"
    assert [r[1] for r in read_labelled(out, "domain")] == [["math"], ["law"]]
    errors = (tmp_path / "domain.jsonl.errors.jsonl").read_text()
    assert json.loads(errors)["line"] == 2
    edu_out = tmp_path / "edu.jsonl"
    assert (
        annotate_main(
            [
                "--task",
                "edu",
                "--in",
                str(docs),
                "--out",
                str(edu_out),
                "--endpoint",
                server,
                "--model",
                "stub-model",
            ]
        )
        == 0
    )
    assert [r[1] for r in read_labelled(edu_out, "edu")] == [["1"], ["2"]]
