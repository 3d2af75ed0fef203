"""Earth Engine source of edifice:sentinelcomposites against the Earth Engine stand-in
(tests/servers/ee_standin.py, a real process on 127.0.0.1): the real earthengine-api client and
google-auth code run (discovery, algorithms, JWT token grant, computePixels with NPY bodies).

The stand-in copies THU sample pixels for the requested grid (both grids are multiples of the same
pixel size, so values are copied, not resampled); the expected values here are computed from the sample
by integer pixel offsets."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from edifice.core.acquire.composites import DEM, S1, S2, DownloadOptions, composite_grid, make_composites
from edifice.core.acquire.earthengine import EarthEngineSource
from edifice.core.errors import Cancelled, InputError
from edifice.core.progress import RecordingProgress

ROOT = Path(__file__).resolve().parents[2]
THU = ROOT / "samples" / "thu"
EXTENT = (116.315, 39.995, 116.325, 40.005)   # inside the THU crop
PADDING = 0.004
SAMPLE = {"S1": THU / "thu_s1_2020.tif", "S2": THU / "thu_s2_synthetic.tif", "DEM": THU / "thu_srtm.tif"}


def expected(key: str, grid) -> np.ndarray:
    """The sample's pixels on ``grid`` by integer offsets (the sample repeated beyond its edges), nodata -> NaN."""
    with rasterio.open(SAMPLE[key]) as ds:
        data = ds.read().astype(np.float64)
        if ds.nodata is not None:
            data[data == ds.nodata] = np.nan
        st = ds.transform
    dr = int(round((grid.transform.f - st.f) / st.e))
    dc = int(round((grid.transform.c - st.c) / st.a))
    rows = (np.arange(grid.height) + dr) % data.shape[1]
    cols = (np.arange(grid.width) + dc) % data.shape[2]
    return data[:, rows[:, None], cols[None, :]]


def read(path) -> tuple[np.ndarray, rasterio.profiles.Profile, tuple]:
    with rasterio.open(path) as ds:
        data = ds.read().astype(np.float64)
        if ds.nodata is not None and not np.isnan(ds.nodata):
            data[data == ds.nodata] = np.nan
        return data, ds.profile, ds.descriptions


def source(ee, **kw) -> EarthEngineSource:
    return EarthEngineSource(2020, key=str(ee.key_path), url=ee.url, **kw)


def run(ee_src, tmp_path, products=("S1", "S2", "DEM"), **options) -> dict:
    outs = {k: str(tmp_path / f"{k}.tif") for k in products}
    opts = DownloadOptions(**{"workers": 2, "max_request_bytes": 2**20, **options})
    return make_composites(ee_src, EXTENT, outs, padding=PADDING, options=opts)


def test_composites_hold_the_sample_pixels_with_shafts_bands(ee_standin, tmp_path):
    ee = ee_standin()
    out = run(source(ee), tmp_path)
    for key, product, dtype in (("S1", S1, "float32"), ("S2", S2, "float32"), ("DEM", DEM, "int16")):
        data, profile, desc = read(out[key]["path"])
        grid = composite_grid(EXTENT, product, PADDING)
        assert desc == product.bands
        assert profile["dtype"] == dtype and profile["crs"].to_epsg() == 4326
        assert profile["transform"].almost_equals(grid.transform, precision=1e-12)
        np.testing.assert_array_equal(data, expected(key, grid))
    # S-1/S-2 on Earth Engine's 10 m in EPSG:4326, the DEM on 30 m, each covering extent + padding
    assert S1.pixel_deg == pytest.approx(8.983152841195215e-05, rel=1e-12)
    assert DEM.pixel_deg == pytest.approx(2.6949458523585647e-04, rel=1e-12)
    with rasterio.open(out["S1"]["path"]) as ds:
        b = ds.bounds
        assert b.left <= EXTENT[0] - PADDING and b.right >= EXTENT[2] + PADDING
        assert b.bottom <= EXTENT[1] - PADDING and b.top >= EXTENT[3] + PADDING


def test_recipe_is_shafts_annual_median(ee_standin, tmp_path):
    ee = ee_standin()
    run(source(ee), tmp_path)
    s1 = (ee.state_dir / "expression_S1.json").read_text()
    s2 = (ee.state_dir / "expression_S2.json").read_text()
    for text in (s1, s2):
        assert "2020-01-01" in text and "2021-01-01" in text
        assert "Reducer.percentile" in text and "[50]" in text
    assert '"IW"' in s1 and "instrumentMode" in s1 and "transmitterReceiverPolarisation" in s1
    assert "COPERNICUS/S2_SR_HARMONIZED" in s2 and "CLOUDY_PIXEL_PERCENTAGE" in s2 and "Filter.lessThan" in s2
    assert "USGS/SRTMGL1_003" in (ee.state_dir / "expression_DEM.json").read_text()


def test_429_and_500_are_retried_to_the_same_result(ee_standin, tmp_path):
    ee = ee_standin()
    clean = run(source(ee), tmp_path / "clean", products=("S1",))
    ee.server.set_faults([{"match": "computePixels", "times": 1, "kind": "status", "status": 429},
                          {"match": "computePixels", "times": 1, "kind": "status", "status": 500}])
    faulted = run(source(ee), tmp_path / "faulted", products=("S1",))
    served = ee.computepixels()
    # both runs (clean, then faulted) got every chunk through; the two faults were answered and retried
    assert [r["fault"] for r in served].count(None) == 2 * clean["S1"]["chunks"]
    assert {"status"} == {r["fault"] for r in served if r["fault"]} and sum(bool(r["fault"]) for r in served) == 2
    np.testing.assert_array_equal(read(faulted["S1"]["path"])[0], read(clean["S1"]["path"])[0])


def test_retry_after_is_honoured_by_our_retries(ee_standin, tmp_path):
    """The client's own retries are off; ours wait what Retry-After asks (3 s), not the 0.05 s backoff."""
    ee = ee_standin()
    ee.server.set_faults([{"match": "computePixels", "times": 1, "kind": "status", "status": 429, "retry_after": 3}])
    log = RecordingProgress()
    out = run(source(ee, backoff_s=0.05, progress=log), tmp_path, products=("DEM",), workers=1)
    served = ee.computepixels()
    assert [r["fault"] for r in served][:2] == ["status", None]
    assert served[1]["grid"] == served[0]["grid"]                   # the same chunk, asked again
    assert served[1]["time"] - served[0]["time"] >= 3.0
    assert any("HTTP 429" in m and "retrying in 3.0 s" in m for m in log.infos)
    grid = composite_grid(EXTENT, DEM, PADDING)
    np.testing.assert_array_equal(read(out["DEM"]["path"])[0], expected("DEM", grid))


class _CancelSoonAfterRetry(RecordingProgress):
    """Cancelled (from another thread) 0.3 s after the first 'retrying in' message."""

    def __init__(self):
        super().__init__()
        self.cancelled = threading.Event()
        self.retry_announced_at = None

    def info(self, message):
        super().info(message)
        if "retrying in" in message and self.retry_announced_at is None:
            self.retry_announced_at = time.monotonic()
            threading.Timer(0.3, self.cancelled.set).start()

    def is_cancelled(self):
        return self.cancelled.is_set()


def test_cancel_during_a_long_retry_after_returns_promptly_with_nothing_half_written(ee_standin, tmp_path):
    ee = ee_standin()
    ee.server.set_faults([{"match": "computePixels", "times": 1, "kind": "status", "status": 503,
                           "retry_after": 100}])
    progress = _CancelSoonAfterRetry()
    src = source(ee, progress=progress)
    with pytest.raises(Cancelled):
        make_composites(src, EXTENT, {"DEM": str(tmp_path / "DEM.tif")}, padding=PADDING,
                        options=DownloadOptions(workers=1, max_request_bytes=2**20), progress=progress)
    assert any("retrying in 100.0 s" in m for m in progress.infos)
    assert time.monotonic() - progress.retry_announced_at < 50      # not the 100 s the server asked for
    assert len(ee.computepixels()) == 1                              # no retry was sent after the cancel
    assert not (tmp_path / "DEM.tif").exists()
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in leftovers if "partial" in p.name or p.suffix == ".tif" or ".tmp" in p.name]
    assert not [p for p in leftovers if p.suffix == ".npy"]          # the only chunk never arrived


def test_request_size_error_makes_chunks_smaller(ee_standin, tmp_path):
    ee = ee_standin("--max-request-bytes", "300000")      # < 256 x 256 x 2 bands x 4 bytes
    out = run(source(ee), tmp_path, products=("S1",), max_request_bytes=2**20)
    served = ee.computepixels()
    sizes = [r["grid"]["dimensions"]["width"] * r["grid"]["dimensions"]["height"] for r in served]
    assert max(sizes) * 8 > 300000                        # the first, too large request
    assert out["S1"]["chunks"] > len([s for s in sizes if s * 8 > 300000])
    assert all(s * 8 <= 300000 for s in sizes[-out["S1"]["chunks"]:])
    grid = composite_grid(EXTENT, S1, PADDING)
    np.testing.assert_array_equal(read(out["S1"]["path"])[0], expected("S1", grid))


def test_expired_token_is_refreshed(ee_standin, tmp_path):
    ee = ee_standin()
    src = source(ee)
    ee.expire_tokens()                                    # the token from initialisation is now refused
    out = run(src, tmp_path, products=("DEM",))
    served = ee.server.requests()
    tokens = [r for r in served if r["path"] == "/token"]
    assert len(tokens) == 2
    cp = [r for r in served if r["path"].endswith("computePixels")]
    assert cp[0]["headers"]["authorization"] != cp[-1]["headers"]["authorization"]
    grid = composite_grid(EXTENT, DEM, PADDING)
    np.testing.assert_array_equal(read(out["DEM"]["path"])[0], expected("DEM", grid))


def test_unregistered_and_missing_project_are_named(ee_standin, tmp_path):
    ee = ee_standin()
    with pytest.raises(InputError) as exc:
        run(source(ee, project="not-on-ee"), tmp_path, products=("DEM",))
    assert exc.value.name == "PROJECT" and "not registered for Earth Engine" in str(exc.value)
    assert "code.earthengine.google.com/register" in str(exc.value)
    assert not list(tmp_path.glob("*.tif"))
    info = dict(ee.key_info)
    info.pop("project_id")
    with pytest.raises(InputError) as exc:
        EarthEngineSource(2020, key=json.dumps(info), url=ee.url)
    assert exc.value.name == "PROJECT" and "no Google Cloud project" in str(exc.value)


def test_bad_keys_are_refused_without_echoing_them(ee_standin, tmp_path):
    ee = ee_standin()
    with pytest.raises(InputError) as exc:
        EarthEngineSource(2020, key='{"client_email": "x", "private_key": "SECRETPART"}', url=ee.url)
    assert exc.value.name == "KEY" and "SECRETPART" not in str(exc.value)
    wrong = ee.wrong_key()
    with pytest.raises(InputError) as exc:
        EarthEngineSource(2020, key=wrong, url=ee.url)
    msg = str(exc.value)
    assert exc.value.name == "KEY" and "refused by the token endpoint" in msg
    assert "PRIVATE KEY" not in msg and json.loads(wrong)["private_key_id"] not in msg


def _cli(*args, env=None, **kw) -> subprocess.Popen:
    code = "import sys; from edifice.core.cli import main; sys.exit(main())"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, **kw)


def _cli_args(ee, out_dir, *extra, padding=PADDING):
    return ["sentinel-composites", out_dir, "--extent", ",".join(map(str, EXTENT)), "--year", "2020",
            "--padding", padding, "--ee-url", ee.url, *extra]


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_kill_and_resume_gives_identical_bytes(ee_standin, tmp_path):
    ee = ee_standin()
    common = ["--key-file", ee.key_path, "--products", "S1", "--workers", "1", "--max-request-mb", "1"]
    whole = _cli(*_cli_args(ee, tmp_path / "whole", *common, padding=0.02))  # ~558 px: 3 x 3 chunks of 256
    assert whole.wait(120) == 0, whole.stderr.read()
    n_chunks = json.loads(whole.stdout.read())["S1"]["chunks"]
    assert n_chunks == 9
    # the first 5 chunks are answered, the 6th hangs: the run is killed while it waits (one worker)
    ee.server.set_faults([{"match": "computePixels", "times": 5, "kind": "delay", "seconds": 0},
                          {"match": "computePixels", "times": 1, "kind": "delay", "seconds": 600}])
    out = tmp_path / "resumed"
    first = _cli(*_cli_args(ee, out, *common, padding=0.02))
    manifest = out / ".s1_2020.chunks" / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        if manifest.exists() and manifest.read_text().count('"done"') >= 5:
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    done_before = manifest.read_text().count('"done"')
    assert done_before == 5 and not (out / "s1_2020.tif").exists()
    ee.server.set_faults([])
    before = len(ee.computepixels())
    second = _cli(*_cli_args(ee, out, *common, padding=0.02))
    assert second.wait(120) == 0, second.stderr.read()
    result = json.loads(second.stdout.read())["S1"]
    assert result["chunks_resumed"] == done_before
    assert len(ee.computepixels()) - before == n_chunks - done_before
    assert _sha(out / "s1_2020.tif") == _sha(tmp_path / "whole" / "s1_2020.tif")
    assert not (out / ".s1_2020.chunks").exists()


def test_key_and_tokens_never_in_logs_outputs_or_errors(ee_standin, tmp_path):
    ee = ee_standin("--echo-credentials")
    key_text = ee.key_path.read_text()
    env = {"EDIFICE_EE_KEY": key_text}
    bad = _cli(*_cli_args(ee, tmp_path / "bad", "--project", "not-on-ee", "--products", "DEM"), env=env)
    assert bad.wait(120) == 2
    bad_err = bad.stderr.read()
    assert "not registered for Earth Engine" in bad_err and "Bearer ***" in bad_err   # the server quoted it
    good = _cli(*_cli_args(ee, tmp_path / "good", "--products", "DEM", "--keep-chunks"), env=env)
    assert good.wait(120) == 0
    texts = [bad_err, bad.stdout.read(), good.stdout.read(), good.stderr.read()]
    texts += [p.read_bytes().decode("latin-1") for p in (tmp_path / "good").rglob("*") if p.is_file()]
    tokens = {r["headers"]["authorization"][7:] for r in ee.server.requests() if "authorization" in r["headers"]}
    assert tokens
    secrets = [*tokens, ee.key_info["private_key_id"], *ee.key_info["private_key"].splitlines()[1:4]]
    for text in texts:
        for s in secrets:
            assert s not in text


def test_stored_application_default_credentials(ee_standin, tmp_path, monkeypatch):
    """No key given: the client's stored credentials (here Application Default Credentials naming the
    service-account key file, as ``gcloud auth application-default`` leaves them) are used."""
    ee = ee_standin()
    monkeypatch.setenv("HOME", str(tmp_path))                    # no ~/.config/earthengine/credentials
    monkeypatch.setenv("NO_GCE_CHECK", "True")                   # never probe a metadata server
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(ee.key_path))
    out = run(EarthEngineSource(2020, key=None, url=ee.url), tmp_path, products=("DEM",))
    grid = composite_grid(EXTENT, DEM, PADDING)
    np.testing.assert_array_equal(read(out["DEM"]["path"])[0], expected("DEM", grid))


def test_no_credentials_at_all_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    with pytest.raises(InputError) as exc:
        EarthEngineSource(2020, key=None, url="http://127.0.0.1:9")
    assert exc.value.name == "CREDENTIALS" and "earthengine authenticate" in str(exc.value)


def test_a_year_without_scenes_is_named(ee_standin, tmp_path):
    ee = ee_standin("--no-scenes-in", "2016")
    with pytest.raises(InputError) as exc:
        run(EarthEngineSource(2016, key=str(ee.key_path), url=ee.url), tmp_path, products=("S2",))
    assert exc.value.name == "YEAR" and "no scene of the recipe" in str(exc.value) and "2016" in str(exc.value)
    assert not (tmp_path / "S2.tif").exists()
