"""Building function by a large multimodal model (seed buildingsense-essd-2026 §3.3) through any
OpenAI-compatible chat-completions endpoint (a hosted service, or a local llama.cpp / vLLM server).

Each sample of a :mod:`.samples` folder becomes one request (:mod:`.prompts`: the template, the
data combination, the taxonomy's categories; images as base64 data URLs; ``response_format`` a
JSON schema). The answer is validated; a malformed one is asked for again once. Requests go
through the shared :class:`~edifice.core.acquire.http.HttpClient` (retries with backoff on 429
and 5xx, ``Retry-After``, cancellable waits) with at most ``concurrency`` in flight, and its
persistent cache: the cache key is the request body (model, prompt, images), so a rerun or a
resumed run after a kill sends only the requests not answered yet. The key is sent as a bearer
token and never logged or written (every message passes through the client's redaction).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..acquire.http import HttpClient, HttpError, ResponseCache, default_cache_dir, run_bounded
from ..errors import InputError
from ..progress import Progress, ensure
from ..taxonomy import Taxonomy, load_taxonomy
from .prompts import (ANSWER_FIELDS, PromptTemplate, answer_schema, build_messages, category_list,
                      check_combination, correction_messages, load_template)
from .samples import load_manifest

SERVICE = "LLM endpoint"
#: Output fields (GeoPackage layer ``building_function``) in order.
OUTPUT_FIELDS = ("building_id", "function", "coarse_class", "rci_class", "confidence", "reason",
                 "picture_analysis", "text_analysis", "notes", "status", "raw_answer", "prompt_tokens",
                 "completion_tokens", "from_cache", "model", "combination")
#: HTTP statuses after which no other building can succeed either: stop the run.
FATAL_STATUSES = (401, 403, 404)


@dataclass
class LlmSettings:
    """``url``: the endpoint's base URL (``http://host:port/v1``; ``/chat/completions`` is added
    unless present); ``model``: model name; ``combination``: T, R, S, RT, ST, RS or RST;
    ``template``: shipped template name or .toml path; ``taxonomy``: shipped name or CSV whose
    ``category_level`` lists the functions (coarser levels give the roll-up); ``concurrency``:
    requests in flight; ``price_*_per_mtok``: currency units per million tokens for the cost line;
    ``cache_dir``: persistent answer cache (default ``<edifice cache>/llm``), ``use_cache``."""

    url: str
    model: str
    combination: str = "RST"
    template: str | None = None
    taxonomy: str = "buildingsense_template"
    category_level: int = 0
    concurrency: int = 4
    temperature: float = 0.0
    max_tokens: int = 2048
    timeout_s: float = 180.0
    max_retries: int = 5
    backoff_s: float = 1.0
    price_input_per_mtok: float = 0.0
    price_output_per_mtok: float = 0.0
    cache_dir: str | None = None
    use_cache: bool = True


@dataclass
class Outcome:
    """One building's result."""

    building_id: str
    function: str = ""
    confidence: float = float("nan")
    answer: dict = field(default_factory=dict)
    status: str = "ok"
    raw_answer: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    billed_prompt_tokens: int = 0
    billed_completion_tokens: int = 0
    requests_sent: int = 0
    from_cache: bool = True
    missing: list = field(default_factory=list)


def endpoint_url(url: str) -> str:
    """The chat-completions URL of a base URL."""
    u = url.strip().rstrip("/")
    if not re.match(r"^https?://", u):
        raise InputError("URL", f"'{url}' is not an http(s) URL.", "give e.g. http://127.0.0.1:8080/v1.")
    return u if u.endswith("/chat/completions") else u + "/chat/completions"


# ----------------------------------------------------------------------------- answers
def parse_answer(response: dict, categories: list[str]) -> tuple[dict | None, str, str]:
    """(validated answer or None, raw text, problem) of a chat-completions response."""
    try:
        raw = response["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        return None, json.dumps(response)[:2000], "the response has no choices[0].message.content"
    text = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", raw)  # models sometimes fence their JSON
    try:
        answer = json.loads(text)
    except ValueError as exc:
        return None, raw, f"it is not valid JSON ({exc.msg} at character {exc.pos})"
    problem = _answer_problem(answer, categories)
    if problem:
        return None, raw, problem
    canon = {c.lower(): c for c in categories}
    answer["function"] = canon[answer["function"].strip().lower()]
    answer["confidence"] = float(answer["confidence"])
    return answer, raw, ""


def _answer_problem(answer, categories: list[str]) -> str:
    if not isinstance(answer, dict):
        return "it is not a JSON object"
    absent = [f for f in ANSWER_FIELDS if f not in answer]
    if absent:
        return f"it lacks the field(s) {', '.join(absent)}"
    if not isinstance(answer["function"], str) or answer["function"].strip().lower() not in {
            c.lower() for c in categories}:
        return f"function '{answer['function']}' is not one of the listed categories"
    c = answer["confidence"]
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 <= c <= 1:
        return f"confidence {c!r} is not a number from 0 to 1"
    bad = [f for f in ANSWER_FIELDS if f not in ("function", "confidence") and not isinstance(answer[f], str)]
    if bad:
        return f"field(s) {', '.join(bad)} are not text"
    return ""


# ----------------------------------------------------------------------------- one building
class _Job:
    """Everything a worker thread needs to classify one sample."""

    def __init__(self, settings: LlmSettings, client: HttpClient, template: PromptTemplate, folder: Path,
                 categories: list[str], categories_text: str, api_key: str | None):
        self.s = settings
        self.client = client
        self.template = template
        self.folder = folder
        self.categories = categories
        self.categories_text = categories_text
        self.url = endpoint_url(settings.url)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.schema = {"type": "json_schema", "json_schema": {"name": "building_function", "strict": True,
                                                              "schema": answer_schema(categories)}}

    def body(self, messages: list[dict]) -> dict:
        return {"model": self.s.model, "messages": messages, "temperature": self.s.temperature,
                "max_tokens": self.s.max_tokens, "response_format": self.schema}

    def __call__(self, sample: dict) -> Outcome:
        out = Outcome(str(sample["id"]))
        messages, info = build_messages(sample, self.folder, self.s.combination, self.template, self.categories_text)
        out.missing = info["missing"]
        problem = ""
        for attempt in range(2):  # one retry for a malformed answer
            try:
                answer, raw, problem = self._ask(messages, out)
            except HttpError as exc:
                if exc.status in FATAL_STATUSES:
                    raise
                out.status, out.raw_answer = f"error: {exc}"[:500], ""
                return out
            out.raw_answer = raw
            if answer is not None:
                out.answer, out.function, out.confidence = answer, answer["function"], answer["confidence"]
                out.status = "ok" if attempt == 0 else "ok after retry"
                return out
            messages = correction_messages(messages, raw, problem, self.template)
        out.status = f"invalid: {problem}"[:500]
        return out

    def _ask(self, messages: list[dict], out: Outcome) -> tuple[dict | None, str, str]:
        r = self.client.post(self.url, json=self.body(messages), headers=self.headers, use_cache=self.s.use_cache)
        doc = r.json()
        usage = doc.get("usage") or {} if isinstance(doc, dict) else {}
        pt, ct = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        out.prompt_tokens += pt
        out.completion_tokens += ct
        if not r.from_cache:
            out.from_cache = False
            out.requests_sent += 1
            out.billed_prompt_tokens += pt
            out.billed_completion_tokens += ct
        return parse_answer(doc, self.categories) if isinstance(doc, dict) else (None, r.text, "not a JSON object")


# ----------------------------------------------------------------------------- the tool
def classify_building_function(samples: str, output: str, settings: LlmSettings, api_key: str | None = None,
                               progress: Progress | None = None) -> dict:
    """Classify every sample of the samples folder ``samples`` and write the GeoPackage ``output``
    (layer ``building_function``: the fields of :data:`OUTPUT_FIELDS`, footprints in the samples'
    CRS). Returns counts, tokens and cost."""
    progress = ensure(progress)
    s = settings
    s.combination = check_combination(s.combination)
    _check(s, output)
    folder, manifest = load_manifest(samples)
    taxonomy = load_taxonomy(s.taxonomy, "TAXONOMY")
    categories, categories_text = category_list(taxonomy, s.category_level)
    client = _client(s, api_key, progress)
    job = _Job(s, client, load_template(s.template), folder, categories, categories_text, api_key)
    items = manifest["samples"]
    outcomes: dict[str, Outcome] = {}
    progress.info(f"Classifying {len(items)} buildings with '{s.model}' at {client.redact(job.url)} "
                  f"(data combination {s.combination}, {len(categories)} categories, {s.concurrency} at a time).")
    for _, outcome in run_bounded(job, items, s.concurrency, progress):  # yields in this thread
        outcomes[outcome.building_id] = outcome
        progress.set_fraction(0.98 * len(outcomes) / max(len(items), 1))
    progress.check_cancelled()
    ordered = [outcomes[str(x["id"])] for x in items]
    _write(output, items, ordered, taxonomy, s, manifest["crs"])
    result = _summary(ordered, s, output)
    _log(progress, result)
    return result


def _check(s: LlmSettings, output: str) -> None:
    endpoint_url(s.url)
    if not s.model.strip():
        raise InputError("MODEL", "no model name given.", "give the model name the endpoint serves.")
    if not 1 <= int(s.concurrency) <= 256:
        raise InputError("CONCURRENCY", f"{s.concurrency} is not between 1 and 256.", "give e.g. 4.")
    if not str(output).lower().endswith(".gpkg"):
        raise InputError("OUTPUT", f"'{output}' is not a GeoPackage name.", "give a .gpkg file name.")


def _client(s: LlmSettings, api_key: str | None, progress: Progress) -> HttpClient:
    cache = ResponseCache(Path(s.cache_dir) if s.cache_dir else default_cache_dir() / "llm") if s.use_cache else None
    return HttpClient(SERVICE, timeout_s=s.timeout_s, max_retries=s.max_retries, backoff_s=s.backoff_s, cache=cache,
                      progress=progress, secrets=(api_key,) if api_key else (), pool_size=max(16, s.concurrency))


def rollup(taxonomy: Taxonomy, function: str, level: int) -> str:
    """The class of ``function`` at taxonomy level ``level`` ('' when unknown or no such level)."""
    if not function or level >= len(taxonomy.levels):
        return ""
    return taxonomy.lookup_at(function, level) or ""


def _write(output: str, items: list[dict], outcomes: list[Outcome], taxonomy: Taxonomy, s: LlmSettings,
           crs_wkt: str) -> None:
    import pyogrio.raw
    import shapely

    from ..raster_io import atomic_output

    lvl = s.category_level
    cols = {
        "building_id": [o.building_id for o in outcomes], "function": [o.function for o in outcomes],
        "coarse_class": [rollup(taxonomy, o.function, lvl + 1) for o in outcomes],
        "rci_class": [rollup(taxonomy, o.function, len(taxonomy.levels) - 1) if len(taxonomy.levels) > lvl + 1
                      else "" for o in outcomes],
        "confidence": np.array([o.confidence for o in outcomes], float),
        **{f: [str(o.answer.get(f, "")) for o in outcomes] for f in ("reason", "picture_analysis", "text_analysis",
                                                                     "notes")},
        "status": [o.status for o in outcomes], "raw_answer": [o.raw_answer for o in outcomes],
        "prompt_tokens": np.array([o.prompt_tokens for o in outcomes], np.int64),
        "completion_tokens": np.array([o.completion_tokens for o in outcomes], np.int64),
        "from_cache": np.array([o.from_cache for o in outcomes], bool),
        "model": [s.model] * len(outcomes), "combination": [s.combination] * len(outcomes)}
    data = [v if isinstance(v, np.ndarray) else np.array(v, dtype=object) for v in (cols[f] for f in OUTPUT_FIELDS)]
    geoms = shapely.from_wkt([x["geometry"] for x in items])
    single = bool(np.all(shapely.get_type_id(geoms) == 3))
    wkb = shapely.to_wkb(geoms, output_dimension=2)
    with atomic_output(output) as tmp:
        pyogrio.raw.write(str(tmp), wkb, data, list(OUTPUT_FIELDS), driver="GPKG", layer="building_function",
                          geometry_type="Polygon" if single else "MultiPolygon", crs=crs_wkt,
                          promote_to_multi=not single)


def _summary(outcomes: list[Outcome], s: LlmSettings, output: str) -> dict:
    bp = sum(o.billed_prompt_tokens for o in outcomes)
    bc = sum(o.billed_completion_tokens for o in outcomes)
    cost = (bp * s.price_input_per_mtok + bc * s.price_output_per_mtok) / 1e6
    missing = {m: sum(1 for o in outcomes if m in o.missing) for m in s.combination}
    return {"buildings": len(outcomes), "classified": sum(1 for o in outcomes if o.status.startswith("ok")),
            "retried": sum(1 for o in outcomes if o.status == "ok after retry"),
            "invalid": sum(1 for o in outcomes if o.status.startswith("invalid")),
            "errors": sum(1 for o in outcomes if o.status.startswith("error")),
            "requests_sent": sum(o.requests_sent for o in outcomes),
            "from_cache": sum(1 for o in outcomes if o.from_cache and not o.status.startswith("error")),
            "prompt_tokens": sum(o.prompt_tokens for o in outcomes),
            "completion_tokens": sum(o.completion_tokens for o in outcomes),
            "billed_prompt_tokens": bp, "billed_completion_tokens": bc, "cost": round(cost, 6),
            "missing_modality": missing, "output": str(output)}


def _log(progress: Progress, r: dict) -> None:
    progress.info(f"{r['classified']} of {r['buildings']} buildings classified ({r['retried']} after a retry), "
                  f"{r['invalid']} with no valid answer, {r['errors']} failed requests.")
    progress.info(f"Requests sent: {r['requests_sent']}; answers from the cache: {r['from_cache']}.")
    progress.info(f"Tokens this run: {r['billed_prompt_tokens']} prompt + {r['billed_completion_tokens']} completion "
                  f"(all answers: {r['prompt_tokens']} + {r['completion_tokens']}); cost this run: {r['cost']:.4f}.")
    for m, n in r["missing_modality"].items():
        if n and m != "T":
            progress.warning(f"{n} building(s) had no {'remote sensing' if m == 'R' else 'street-view'} image.")
    if r["errors"]:
        progress.warning(f"{r['errors']} building(s) whose requests failed have an empty function (see 'status'); "
                         "a rerun sends only their requests again.")
    if r["invalid"]:
        progress.warning(f"{r['invalid']} building(s) got no valid answer, also after one retry (see 'status', "
                         "'raw_answer'); their answers are cached: rerun without the cache to ask again.")
