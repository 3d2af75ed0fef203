"""CLI retinex and poi-probability as a user runs them (``python -m edifice.core.cli`` in a
subprocess): a good run, a missing input, an unknown preset, I/O errors. Errors are one line on
stderr ("edifice: error: ...") and exit code 2, never a traceback."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

import edifice
from edifice.core.cli import main
from edifice.core.grid import Grid
from edifice.core.raster_io import atomic_raster

# the subprocess imports the same edifice package as this test
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(edifice.__file__).parent.parent),
                                                   os.environ.get("PYTHONPATH", "")]))
ENV.pop("WORLD_SIZE", None)
#: central Helsinki, EPSG:3067, 40 x 40 px of 10 m
HELSINKI_GRID = ["--extent", "385000,6671500,385400,6671900", "--pixel-size", "10", "--crs", "EPSG:3067"]


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "edifice.core.cli", *map(str, args)], capture_output=True,
                          text=True, env=ENV, cwd=str(cwd), timeout=120)


def _one_error_line(r, *words):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("edifice: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_retinex_good_run_creates_the_output_folder(tmp_path, kampala_rgb):
    r = _cli("retinex", kampala_rgb, "newdir/sub/o.tif", "--sigmas", "15,80", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "newdir" / "sub" / "o.tif"
    assert json.loads(r.stdout.strip().splitlines()[-1])["output"] == "newdir/sub/o.tif"
    with rasterio.open(out) as ds, rasterio.open(kampala_rgb) as src:
        assert ds.shape == src.shape and ds.dtypes[0] == "uint8"
    assert sorted(p.name for p in out.parent.iterdir()) == ["o.qml", "o.tif"]  # + its style; no scratch or partial file


def test_retinex_missing_input(tmp_path):
    r = _cli("retinex", "missing.tif", "o.tif", cwd=tmp_path)
    _one_error_line(r, "INPUT", "missing.tif", "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_poi_good_run(tmp_path, helsinki_pbf):
    r = _cli("poi-probability", helsinki_pbf, "maps/p.tif", "--layer", "points", *HELSINKI_GRID, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["width"] == 40 and res["height"] == 40 and res["unmapped"] > 0
    with rasterio.open(tmp_path / "maps" / "p.tif") as ds:
        assert ds.count == 3 and ds.crs.to_epsg() == 3067 and 0 <= ds.read().min()
    assert "POIs mapped:" in r.stderr


def test_poi_missing_input(tmp_path):
    r = _cli("poi-probability", "nowhere.gpkg", "p.tif", *HELSINKI_GRID, cwd=tmp_path)
    _one_error_line(r, "INPUT", "nowhere.gpkg")
    assert list(tmp_path.iterdir()) == []


def test_poi_unknown_preset(tmp_path, helsinki_pbf):
    r = _cli("poi-probability", helsinki_pbf, "p.tif", "--preset", "yelp", *HELSINKI_GRID, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--preset" in r.stderr and "yelp" in r.stderr
    assert not (tmp_path / "p.tif").exists()


def _raster(path, arr, nodata=None):
    g = Grid(Affine(10, 0, 385000, 0, -10, 6671900), arr.shape[2], arr.shape[1], "EPSG:3067")
    with atomic_raster(path, g, arr.shape[0], arr.dtype, nodata=nodata) as dst:
        dst.write(arr)
    return str(path)


def test_output_under_a_file_is_one_line_exit_2(tmp_path, capsys):
    """The output's folder cannot be made (a file is in the way): OSError -> one line, exit 2."""
    src = _raster(tmp_path / "in.tif", np.full((1, 30, 30), 9, np.uint8))
    (tmp_path / "afile").write_text("x")
    assert main(["retinex", src, str(tmp_path / "afile" / "o.tif"), "--sigmas", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("edifice: error: OUTPUT: the folder ") and "afile" in err[-1], err
    assert not any(e.startswith("edifice:") or "Traceback" in e for e in err[:-1]), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "in.tif"]


def test_oserror_from_a_tool_is_one_line_exit_2(monkeypatch, capsys):
    from edifice.core import cli

    def boom(a):
        raise PermissionError(13, "Permission denied", "/data/out.tif")
    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser(), boom))
    assert cli.main(["retinex", "a.tif", "b.tif"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edifice: error: Permission denied: '/data/out.tif'"]


def _with_func(parser, func):
    parser._subparsers._group_actions[0].choices["retinex"].set_defaults(func=func)
    return parser


def test_poi_reference_without_valid_pixel(tmp_path, helsinki_pbf, capsys):
    ref = _raster(tmp_path / "ref.tif", np.zeros((1, 40, 40), np.uint8), nodata=0)
    rc = main(["poi-probability", str(helsinki_pbf), str(tmp_path / "p.tif"), "--layer", "points",
               "--reference", ref])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("edifice: error: REFERENCE: ") and "no valid pixel" in err[-1]
    assert not (tmp_path / "p.tif").exists()
