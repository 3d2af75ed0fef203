"""Earth Engine stand-in for tests/servers/standin.py: answers the REST calls the real ``earthengine-api``
client makes, with pixels made from the THU samples (``samples/thu/``).

- ``GET /$discovery/rest``: the discovery document shipped in the earthengine-api wheel
  (``ee/tests/cloud_api_discovery_document.json``);
- ``POST /token``: an OAuth token endpoint for service-account JWT grants; the JWT's RS256 signature
  is checked against ``--public-key`` and its ``iss``/``aud`` against the key; answers ``tok-<n>``;
- ``GET /v1*/projects/<p>/algorithms``: ``ee/tests/algorithms.json`` from the wheel;
- ``POST /v1*/projects/<p>/image:computePixels``: an NPY structured array (one field per band) for the
  requested grid, values looked up by nearest pixel centre in the THU sample of the product found in the
  expression (S1_GRD -> ``thu_s1_2020.tif``, S2_SR_HARMONIZED -> ``thu_s2_synthetic.tif``, SRTMGL1_003 ->
  ``thu_srtm.tif``), the sample repeated periodically beyond its edges (its grid is aligned with the
  requested one, so values are copied, not resampled); NaN and nodata become -32768 as the client's
  ``unmask(-32768)`` asks. Each expression is saved as ``<state>/expression_<product>.json``.
- ``POST /test/expire-tokens``: every token issued so far is answered 401 from now on.

Errors as Earth Engine words them: 401 for a missing/expired token, 403 for a project not in
``--registered`` (quoting the caller's token with ``--echo-credentials``), 400 "Total request size (...)
must be less than or equal to N bytes" above
``--max-request-bytes``, 400 for an expression that does not follow the recipe.
"""
from __future__ import annotations

import argparse
import base64
import importlib.util
import io
import json
import os
import re
import threading
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[2]
SENTINEL = -32768
_CFG: dict = {}
_LOCK = threading.Lock()
_TOKENS: dict[str, bool] = {}        # token -> still valid
_SAMPLES: dict[str, tuple] = {}

PRODUCTS = {  # product -> (collection id in the expression, sample file, required recipe words)
    "S1": ("COPERNICUS/S1_GRD", "thu_s1_2020.tif", ("instrumentMode", "IW", "transmitterReceiverPolarisation",
                                                    "VV", "VH")),
    "S2": ("COPERNICUS/S2_SR_HARMONIZED", "thu_s2_synthetic.tif", ("CLOUDY_PIXEL_PERCENTAGE", "B4", "B8")),
    "DEM": ("USGS/SRTMGL1_003", "thu_srtm.tif", ("elevation",)),
}


def fake_service_account(folder: Path, project: str = "edifice-test",
                         email: str = "edifice@edifice-test.iam.gserviceaccount.com"):
    """(key dict without token_uri, public PEM path) of a locally generated RSA service-account key, for
    tests and benchmarks: start the stand-in with ``--public-key`` and set ``token_uri`` to its /token."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    pub = Path(folder) / "sa_public.pem"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    info = {"type": "service_account", "project_id": project, "private_key_id": os.urandom(10).hex(),
            "private_key": pem, "client_email": email, "client_id": "104200000000000000001"}
    return info, pub


def setup(args, state_dir):
    p = argparse.ArgumentParser()
    p.add_argument("--public-key", required=True, help="PEM public key of the fake service account")
    p.add_argument("--client-email", required=True)
    p.add_argument("--registered", default="edifice-test", help="comma-separated projects registered for EE")
    p.add_argument("--max-request-bytes", type=int, default=50331648)
    p.add_argument("--samples", default=str(ROOT / "samples" / "thu"))
    p.add_argument("--no-scenes-in", type=int, default=None,
                   help="a year whose collections are empty (the composite then has no bands)")
    p.add_argument("--echo-credentials", action="store_true",
                   help="quote the caller's Authorization header in 403 messages (as a careless server might)")
    a = p.parse_args(args)
    ee_dir = Path(importlib.util.find_spec("ee").origin).parent / "tests"
    _CFG.update(state=Path(state_dir), public_key=Path(a.public_key).read_bytes(), email=a.client_email,
                registered=set(a.registered.split(",")), echo=a.echo_credentials, empty_year=a.no_scenes_in, max_bytes=a.max_request_bytes,
                samples=Path(a.samples),
                discovery=(ee_dir / "cloud_api_discovery_document.json").read_bytes(),
                algorithms=(ee_dir / "algorithms.json").read_bytes())


def _json(status, obj):
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()


def _error(status, message, reason):
    return _json(status, {"error": {"code": status, "message": message, "status": reason}})


def handle(method, path, query, headers, body):
    if path.endswith("/$discovery/rest"):
        return 200, {"Content-Type": "application/json"}, _CFG["discovery"]
    if path == "/token" and method == "POST":
        return _token(body)
    if path == "/test/expire-tokens":
        with _LOCK:
            for t in _TOKENS:
                _TOKENS[t] = False
        return _json(200, {})
    m = re.match(r"^/v1[a-z0-9]*/projects/([^/]+)/(algorithms|image:computePixels)$", path)
    if not m:
        return _error(404, f"stand-in: no route for {method} {path}", "NOT_FOUND")
    denied = _check_auth(headers)
    if denied:
        return denied
    if m.group(2) == "algorithms":
        return 200, {"Content-Type": "application/json"}, _CFG["algorithms"]
    if m.group(1) not in _CFG["registered"]:
        caller = f" (caller: {headers.get('authorization')})" if _CFG["echo"] else ""
        return _error(403, f"Project '{m.group(1)}' is not registered to use Earth Engine{caller}. Visit "
                           "https://code.earthengine.google.com/register to register.", "PERMISSION_DENIED")
    return _compute_pixels(json.loads(body))


# -- OAuth ----------------------------------------------------------------------
def _b64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _token(body: bytes):
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
        return _json(400, {"error": "unsupported_grant_type"})
    try:
        head, payload, sig = form["assertion"].split(".")
        key = serialization.load_pem_public_key(_CFG["public_key"])
        key.verify(_b64(sig), f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
        claims = json.loads(_b64(payload))
    except (KeyError, ValueError, InvalidSignature):
        return _json(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    if claims.get("iss") != _CFG["email"]:
        return _json(400, {"error": "invalid_grant", "error_description": "Invalid issuer."})
    with _LOCK:
        token = f"tok-{len(_TOKENS) + 1}-stand-in-access-token"
        _TOKENS[token] = True
    return _json(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})


def _check_auth(headers):
    auth = headers.get("authorization", "")
    token = auth[7:] if auth.startswith("Bearer ") else ""
    with _LOCK:
        ok = _TOKENS.get(token, False)
    if not ok:
        return _error(401, "Request had invalid authentication credentials. Expected OAuth 2 access token.",
                      "UNAUTHENTICATED")
    return None


# -- pixels ---------------------------------------------------------------------
def _product(expression: str) -> str | None:
    for key, (collection, _, _) in PRODUCTS.items():
        if collection in expression:
            return key
    return None


def _sample(key: str):
    """(bands as float64 with NaN for nodata, transform) of a product's sample, read once."""
    with _LOCK:
        if key not in _SAMPLES:
            with rasterio.open(_CFG["samples"] / PRODUCTS[key][1]) as ds:
                data = ds.read().astype(np.float64)
                if ds.nodata is not None:
                    data[data == ds.nodata] = np.nan
                _SAMPLES[key] = (data, ds.transform)
        return _SAMPLES[key]


def _compute_pixels(req: dict):
    expression = json.dumps(req.get("expression", {}))
    key = _product(expression)
    if key is None:
        return _error(400, "stand-in: no known collection in the expression.", "INVALID_ARGUMENT")
    missing = [w for w in PRODUCTS[key][2] if w not in expression]
    if missing:
        return _error(400, f"stand-in: the {key} expression lacks {missing}.", "INVALID_ARGUMENT")
    (_CFG["state"] / f"expression_{key}.json").write_text(json.dumps(req["expression"], sort_keys=True))
    bands = req.get("bandIds") or []
    if key != "DEM" and _CFG["empty_year"] and f'"{_CFG["empty_year"]}-01-01"' in expression:
        return _error(400, f"Image.select: Pattern '{bands[0]}' did not match any bands.", "INVALID_ARGUMENT")
    grid = req["grid"]
    w, h = int(grid["dimensions"]["width"]), int(grid["dimensions"]["height"])
    dtype = np.int16 if key == "DEM" else np.float32
    size = w * h * len(bands) * np.dtype(dtype).itemsize
    if size > _CFG["max_bytes"]:
        return _error(400, f"Total request size ({size} bytes) must be less than or equal to "
                           f"{_CFG['max_bytes']} bytes.", "INVALID_ARGUMENT")
    values = _grid_values(key, grid["affineTransform"], w, h)
    out = np.zeros((h, w), dtype=[(b, dtype) for b in bands])
    for i, b in enumerate(bands):
        v = values[i]
        out[b] = np.where(np.isfinite(v), v, SENTINEL).astype(dtype)
    buf = io.BytesIO()
    np.save(buf, out, allow_pickle=False)
    return 200, {"Content-Type": "application/octet-stream"}, buf.getvalue()


def _grid_values(key: str, at: dict, w: int, h: int) -> np.ndarray:
    """Sample values at the pixel centres of the requested grid (the sample repeated periodically)."""
    data, t = _sample(key)
    xs = at["translateX"] + at["scaleX"] * (np.arange(w) + 0.5)
    ys = at["translateY"] + at["scaleY"] * (np.arange(h) + 0.5)
    cols = np.floor((xs - t.c) / t.a).astype(np.int64) % data.shape[2]
    rows = np.floor((ys - t.f) / t.e).astype(np.int64) % data.shape[1]
    return data[:, rows[:, None], cols[None, :]]
