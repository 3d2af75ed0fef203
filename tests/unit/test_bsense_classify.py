"""edifice:classifybuildingfunction core against a stand-in OpenAI-compatible server (a real process on
127.0.0.1, tests/servers/llm_standin.py): request checks for the seven data combinations, malformed
answers retried once, 429 with Retry-After and 500 retried, the cache (a rerun sends nothing), a SIGKILL
and resume (only the missing requests), the concurrency limit, cancel, and the key never written."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest

from edifice.core.acquire.http import HttpError
from edifice.core.buildingsense.classify import LlmSettings, classify_building_function, parse_answer
from edifice.core.buildingsense.prompts import COMBINATIONS, check_combination
from edifice.core.buildingsense.samples import PoiSource, SampleSettings, building_samples
from edifice.core.errors import Cancelled, InputError
from edifice.core.progress import Progress, RecordingProgress
from edifice.core.taxonomy import load_taxonomy

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "tests" / "servers" / "llm_standin.py"
_spec = importlib.util.spec_from_file_location("_bsense_scene", Path(__file__).with_name("_bsense_scene.py"))
scene_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scene_mod)
KEY = "sk-test-7f3a9c1e5b2d4f6a8c0e"


def make_samples(folder: Path, n: int = 6, notes: dict | None = None) -> tuple[str, dict]:
    """Samples of the synthetic scene; the text carries each building's reference ``use`` (the stand-in
    answers with it) and its ``note`` (which tells the stand-in to answer badly)."""
    sc = scene_mod.make_scene(folder / "scene", n, notes)
    out = folder / "samples"
    building_samples(sc["buildings"], str(out), id_field="bid", imagery=sc["imagery"],
                     street_view_folder=sc["street_view"], pois=PoiSource(sc["pois"]),
                     attribute_fields=["use", "height", "year", "note"], settings=SampleSettings(chip_max_px=64))
    return str(out), sc


def settings(url, tmp_path, **kw) -> LlmSettings:
    base = dict(url=url + "/v1", model="stand-in-vl", cache_dir=str(tmp_path / "cache"), backoff_s=0.05,
                concurrency=3)
    base.update(kw)
    return LlmSettings(**base)


def read_output(path) -> dict:
    meta, _, _, data = pyogrio.raw.read(str(path))
    return {n: d for n, d in zip(meta["fields"], data)}


def posts(server) -> list[dict]:
    return [r for r in server.requests() if r["path"].endswith("/chat/completions")]


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_seven_combinations_requests_checked(tmp_path, standin, combination):
    samples, sc = make_samples(tmp_path, n=3)
    server = standin(SERVER, "--combination", combination)
    out = tmp_path / "f.gpkg"
    res = classify_building_function(samples, str(out), settings(server.url, tmp_path, combination=combination))
    rec = read_output(out)
    assert list(rec["status"]) == ["ok"] * 3, rec["status"]  # the server answers 400 to any malformed request
    bodies = [json.loads(r["body"]) for r in posts(server)]
    assert len(bodies) == 3 and res["requests_sent"] == 3
    n_images = {len([p for p in b["messages"][1]["content"] if p["type"] == "image_url"]) for b in bodies}
    assert n_images == {("R" in combination) * 2 + ("S" in combination) * 1}
    text = bodies[0]["messages"][1]["content"][0]["text"]
    assert ("Location (longitude, latitude)" in text) == ("T" in combination)
    assert "- office mix (office)" in text  # categories of the taxonomy with their coarse group
    if "T" in combination:
        assert list(rec["function"]) == sc["uses"][:3]


def test_answers_retries_rollup_and_cache(tmp_path, standin):
    samples, sc = make_samples(tmp_path, n=6, notes={1: "malformed-once", 2: "malformed-always"})
    server = standin(SERVER, "--combination", "RST")
    server.set_faults([{"match": "chat", "kind": "status", "status": 429, "retry_after": 1, "times": 2},
                       {"match": "chat", "kind": "status", "status": 500, "times": 1}])
    out = tmp_path / "f.gpkg"
    log = RecordingProgress()
    res = classify_building_function(samples, str(out), settings(server.url, tmp_path, price_input_per_mtok=2.0,
                                                                 price_output_per_mtok=8.0), progress=log)
    rec = read_output(out)
    assert list(rec["building_id"]) == sc["ids"]
    assert rec["status"][1] == "ok after retry" and rec["status"][2].startswith("invalid: it is not valid JSON")
    ok = [i for i in range(6) if i != 2]
    assert [rec["function"][i] for i in ok] == [sc["uses"][i] for i in ok] and rec["function"][2] == ""
    tax = load_taxonomy("buildingsense_template")
    for i in ok:
        assert rec["coarse_class"][i] == tax.lookup_at(sc["uses"][i], 1)
        assert rec["rci_class"][i] == tax.lookup_at(sc["uses"][i], 2)
        assert rec["confidence"][i] == 0.75 and rec["reason"][i].startswith("the evidence points to")
        assert json.loads(rec["raw_answer"][i])["function"] == sc["uses"][i]
    assert np.isnan(rec["confidence"][2]) and rec["raw_answer"][2].startswith('{"picture_analysis"')
    served = posts(server)
    assert sum(1 for r in served if r["fault"]) == 3
    assert len(served) == 6 + 1 + 1 + 3 and res["requests_sent"] == 8  # 2 retries of bad answers, 3 faults
    assert res["retried"] == 1 and res["invalid"] == 1 and res["classified"] == 5
    assert res["billed_prompt_tokens"] == sum(rec["prompt_tokens"]) > 0
    cost = (res["billed_prompt_tokens"] * 2 + res["billed_completion_tokens"] * 8) / 1e6
    assert res["cost"] == pytest.approx(cost, abs=1e-6)
    assert any("HTTP 429" in m and "retrying in 1.0 s" in m for m in log.lines)
    assert any(m.startswith("Tokens this run:") for m in log.lines)
    # the same run again: every answer (bad ones too) comes from the cache, nothing is sent
    out2 = tmp_path / "g.gpkg"
    res2 = classify_building_function(samples, str(out2), settings(server.url, tmp_path))
    assert res2["requests_sent"] == 0 and len(posts(server)) == len(served)
    rec2 = read_output(out2)
    assert list(rec2["function"]) == list(rec["function"]) and all(rec2["from_cache"])
    assert res2["billed_prompt_tokens"] == 0 and res2["prompt_tokens"] == res["prompt_tokens"]
    # another model is another cache entry
    res3 = classify_building_function(samples, str(tmp_path / "h.gpkg"), settings(server.url, tmp_path, model="m2"))
    assert res3["requests_sent"] == 8


def test_key_sent_as_bearer_and_never_written(tmp_path, standin):
    samples, _ = make_samples(tmp_path, n=3)
    server = standin(SERVER, "--key", KEY)
    out = tmp_path / "f.gpkg"
    log = RecordingProgress()
    res = classify_building_function(samples, str(out), settings(server.url, tmp_path), api_key=KEY, progress=log)
    assert res["classified"] == 3
    assert all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in posts(server))
    with pytest.raises(HttpError) as err:  # a wrong key stops the run: no other building can succeed
        classify_building_function(samples, str(tmp_path / "g.gpkg"), settings(server.url, tmp_path, model="x"),
                                   api_key=KEY[::-1], progress=log)
    assert "401" in str(err.value) and not (tmp_path / "g.gpkg").exists()
    texts = log.lines + [str(err.value), json.dumps(res)]
    assert not any(KEY in t or KEY[::-1] in t for t in texts)
    for f in tmp_path.rglob("*"):
        if f.is_file() and "standin" not in str(f):
            data = f.read_bytes()
            assert KEY.encode() not in data and KEY[::-1].encode() not in data, f


def test_concurrency_limit_and_cancel(tmp_path, standin):
    samples, _ = make_samples(tmp_path, n=8)
    server = standin(SERVER, "--delay", "0.2")
    classify_building_function(samples, str(tmp_path / "a.gpkg"), settings(server.url, tmp_path, concurrency=2))
    assert int((server.state_dir / "max_inflight").read_text()) <= 2

    class CancelAfterTwo(Progress):
        def __init__(self):
            self.done = 0

        def set_fraction(self, f):
            self.done = f

        def is_cancelled(self):
            return self.done > 0.2

    with pytest.raises(Cancelled):
        classify_building_function(samples, str(tmp_path / "b.gpkg"),
                                   settings(server.url, tmp_path, model="other", concurrency=1),
                                   progress=CancelAfterTwo())
    assert not (tmp_path / "b.gpkg").exists()
    assert len(posts(server)) < 16  # the cancelled run stopped before sending all 8


def test_kill_and_resume_sends_only_missing(tmp_path, standin):
    """SIGKILL a CLI run mid-way; the rerun sends exactly the requests whose answers were not cached."""
    samples, _ = make_samples(tmp_path, n=10)
    server = standin(SERVER, "--delay", "0.3", "--key", KEY)
    cache = tmp_path / "cache"
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY + "\n")
    cmd = [sys.executable, "-m", "edifice.core.cli", "classify-building-function", samples, str(tmp_path / "f.gpkg"),
           "--url", server.url + "/v1", "--model", "stand-in-vl", "--concurrency", "1", "--cache-dir", str(cache),
           "--api-key-file", str(key_file)]
    env = {k: v for k, v in os.environ.items() if k != "EDIFICE_LLM_API_KEY"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(posts(server)) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    first = {r["body_sha256"] for r in posts(server)}
    cached = len(list(cache.rglob("*.body")))
    assert 3 <= cached < 10 and not (tmp_path / "f.gpkg").exists()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    second = posts(server)[len(first):]
    assert len(second) == 10 - cached  # only the missing ones (an answer lost in flight is asked again)
    assert len(first | {x["body_sha256"] for x in second}) == 10
    summary = json.loads(r.stdout)
    assert summary["requests_sent"] == 10 - cached and summary["classified"] == 10
    assert KEY not in r.stdout + r.stderr
    assert KEY.encode() not in (tmp_path / "f.gpkg").read_bytes()


def test_parse_answer_and_settings_errors(tmp_path):
    cats = ["residential", "office mix"]
    good = {"picture_analysis": "", "text_analysis": "", "reason": "r", "function": "Office Mix",
            "confidence": 1, "notes": ""}

    def resp(content):
        return {"choices": [{"message": {"content": content}}]}

    ans, _, problem = parse_answer(resp("```json\n" + json.dumps(good) + "\n```"), cats)
    assert problem == "" and ans["function"] == "office mix" and ans["confidence"] == 1.0
    assert "not one of the listed" in parse_answer(resp(json.dumps({**good, "function": "castle"})), cats)[2]
    assert "confidence" in parse_answer(resp(json.dumps({**good, "confidence": 1.5})), cats)[2]
    assert "lacks the field(s) notes" in parse_answer(resp(json.dumps({k: v for k, v in good.items()
                                                                       if k != "notes"})), cats)[2]
    assert "no choices" in parse_answer({"error": "x"}, cats)[2]
    assert check_combination("tsr") == "RST" and check_combination("tr") == "RT"
    with pytest.raises(InputError, match="COMBINATION"):
        check_combination("RX")
    samples, _ = make_samples(tmp_path, n=1)
    with pytest.raises(InputError, match="URL"):
        classify_building_function(samples, str(tmp_path / "o.gpkg"), LlmSettings("ftp://x", "m"))
    with pytest.raises(InputError, match="SAMPLES"):
        classify_building_function(str(tmp_path), str(tmp_path / "o.gpkg"), LlmSettings("http://127.0.0.1:9", "m"))
    with pytest.raises(InputError, match="TEMPLATE"):
        classify_building_function(samples, str(tmp_path / "o.gpkg"),
                                   LlmSettings("http://127.0.0.1:9", "m", template=str(tmp_path / "none.toml")))


def test_failed_request_recorded_and_only_it_resent(tmp_path, standin):
    """A building whose request keeps failing (500 after the retries) gets status 'error' and no function;
    the others are classified; a rerun sends only its request (failures are not cached)."""
    samples, sc = make_samples(tmp_path, n=4)
    server = standin(SERVER)
    server.set_faults([{"match": "chat", "kind": "status", "status": 500, "times": 2}])
    log = RecordingProgress()
    res = classify_building_function(samples, str(tmp_path / "a.gpkg"),
                                     settings(server.url, tmp_path, concurrency=1, max_retries=1), progress=log)
    rec = read_output(tmp_path / "a.gpkg")
    assert rec["status"][0].startswith("error: LLM endpoint: no valid answer") and rec["function"][0] == ""
    assert list(rec["function"][1:]) == sc["uses"][1:4] and res["errors"] == 1
    assert any("a rerun sends only their requests again" in m for m in log.lines)
    res2 = classify_building_function(samples, str(tmp_path / "b.gpkg"), settings(server.url, tmp_path))
    assert res2["requests_sent"] == 1 and res2["classified"] == 4
