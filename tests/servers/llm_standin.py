"""A stand-in OpenAI-compatible chat-completions server for the building-function tests.

It checks every request the way a strict server would and answers ``400`` naming the first problem:
``POST .../chat/completions``; a model name; a system and a user message; ``response_format`` a JSON
schema with the six answer fields and ``function`` an enum of the categories; every image part a
base64 data URL of a real PNG or JPEG; as many image parts as the text declares (``Image N:``); the
text has the section of each modality of the expected data combination and no other.

Answers (valid JSON following the schema) are generated from the prompt: ``function`` is the category
named on a ``use: <category>`` line of the building text when there is one, else one picked from a hash
of the prompt. A building whose text holds ``malformed-once`` is answered with broken JSON the first
time (a request without a correction turn), ``malformed-always`` every time.

Arguments (after ``--``): ``--combination RST`` (expected; default: not checked), ``--key K`` (expected
bearer token; 401 otherwise), ``--delay S`` (seconds before each answer). Writes ``max_inflight`` (the
most requests handled at once) to the state folder."""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import threading
import time
from pathlib import Path

FIELDS = ("picture_analysis", "text_analysis", "reason", "function", "confidence", "notes")
HEADERS = {"R": "[Remote sensing images]", "S": "[Street-view images]", "T": "[Building description text]"}
_cfg = argparse.Namespace(combination=None, key=None, delay=0.0)
_state_dir: Path | None = None
_lock = threading.Lock()
_inflight = [0, 0]  # now, most


def setup(args, state_dir):
    global _cfg, _state_dir
    p = argparse.ArgumentParser()
    p.add_argument("--combination", default=None)
    p.add_argument("--key", default=None)
    p.add_argument("--delay", type=float, default=0.0)
    _cfg = p.parse_args(args)
    _state_dir = Path(state_dir)


def _json(status, doc):
    return status, {"Content-Type": "application/json"}, json.dumps(doc).encode()


def _bad(problem):
    return _json(400, {"error": {"message": problem, "type": "invalid_request_error"}})


def check_request(req) -> tuple[str, str, int, list[str]]:
    """(problem or '', user text, image count, categories) of a request body."""
    if not isinstance(req, dict) or not str(req.get("model", "")).strip():
        return "no model", "", 0, []
    rf = req.get("response_format") or {}
    schema = (rf.get("json_schema") or {}).get("schema") or {}
    if rf.get("type") != "json_schema" or sorted(schema.get("required", [])) != sorted(FIELDS):
        return "response_format is not the answer's JSON schema", "", 0, []
    categories = schema["properties"]["function"].get("enum") or []
    msgs = req.get("messages") or []
    if len(msgs) < 2 or msgs[0].get("role") != "system" or msgs[1].get("role") != "user":
        return "messages must start with a system and a user message", "", 0, categories
    parts = msgs[1]["content"]
    texts = [p["text"] for p in parts if p.get("type") == "text"]
    images = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
    if len(texts) != 1:
        return "the user message needs one text part", "", 0, categories
    for url in images:
        m = re.match(r"^data:(image/(?:png|jpeg));base64,(.+)$", url, re.S)
        if not m:
            return "an image part is not a base64 PNG/JPEG data URL", "", 0, categories
        raw = base64.b64decode(m.group(2), validate=True)
        sig = b"\x89PNG\r\n\x1a\n" if m.group(1) == "image/png" else b"\xff\xd8\xff"
        if not raw.startswith(sig):
            return f"an image part is not a real {m.group(1)}", "", 0, categories
    text = texts[0]
    declared = len(re.findall(r"^Image \d+:", text, re.M))
    if declared != len(images):
        return f"the text declares {declared} images but {len(images)} are attached", text, len(images), categories
    if _cfg.combination:
        for m, header in HEADERS.items():
            if (header in text) != (m in _cfg.combination):
                return f"section {header} {'missing' if m in _cfg.combination else 'unexpected'} for " \
                       f"combination {_cfg.combination}", text, len(images), categories
    return "", text, len(images), categories


def choose_function(text: str, categories: list[str]) -> str:
    """The category on a ``use: <category>`` line of the text, else one picked by a hash of the text."""
    m = re.search(r"^use: (.+)$", text, re.M)
    if m and m.group(1).strip() in categories:
        return m.group(1).strip()
    return categories[int(hashlib.sha256(text.encode()).hexdigest(), 16) % len(categories)]


def _answer(req, text, n_images, categories):
    corrected = len(req["messages"]) > 2
    if "malformed-always" in text or ("malformed-once" in text and not corrected):
        content = '{"picture_analysis": "a roof", "function": '  # cut off: not JSON
    else:
        f = choose_function(text, categories)
        content = json.dumps({"picture_analysis": f"{n_images} image(s) looked at", "text_analysis": "text read",
                              "reason": f"the evidence points to {f}", "function": f, "confidence": 0.75,
                              "notes": "stand-in answer"})
    usage = {"prompt_tokens": len(text) // 4 + 85 * n_images, "completion_tokens": len(content) // 4}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return _json(200, {"id": "chatcmpl-standin", "object": "chat.completion", "model": req["model"],
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": content}}], "usage": usage})


def _track(delta):
    with _lock:
        _inflight[0] += delta
        if _inflight[0] > _inflight[1]:
            _inflight[1] = _inflight[0]
            if _state_dir is not None:
                (_state_dir / "max_inflight").write_text(str(_inflight[1]))


def handle(method, path, query, headers, body):
    if method != "POST" or not path.endswith("/chat/completions"):
        return _json(404, {"error": {"message": f"no route {method} {path}"}})
    if _cfg.key and headers.get("authorization") != f"Bearer {_cfg.key}":
        return _json(401, {"error": {"message": "invalid api key"}})
    _track(+1)
    try:
        if _cfg.delay:
            time.sleep(_cfg.delay)
        try:
            req = json.loads(body)
        except ValueError:
            return _bad("body is not JSON")
        problem, text, n_images, categories = check_request(req)
        if problem:
            return _bad(problem)
        return _answer(req, text, n_images, categories)
    finally:
        _track(-1)
