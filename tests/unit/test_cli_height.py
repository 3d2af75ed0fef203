"""CLI commands height-footprint, ccap and reference-grids (core/cli/height.py) on the THU sample."""
import json

import numpy as np
import rasterio

from edifice.core.cli import main


def test_height_footprint_and_ccap_cli(thu_dir, thu_checkpoint, tmp_path, capsys):
    h, f, m = tmp_path / "h.tif", tmp_path / "f.tif", tmp_path / "m.tif"
    rc = main(["height-footprint", str(thu_dir / "thu_s1_2020.tif"), str(thu_dir / "thu_s2_synthetic.tif"),
               str(thu_dir / "thu_srtm.tif"), str(thu_checkpoint), str(h), str(f),
               "--extent", "116.31,39.99,116.32,40.0", "--padding", "0.005", "--device", "cpu", "--batch-size", "7"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["device"] == "cpu" and out["grid"]["width"] == 12 and out["grid"]["height"] == 12
    rc = main(["ccap", str(m), "--height", str(h), "--footprint", str(f), "--h-min", "2",
               "--masked-height", str(tmp_path / "uh.tif")])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with rasterio.open(h) as a, rasterio.open(f) as b:
        hv, fv = a.read(1), b.read(1)
    assert rc == 0 and 0.05 <= res["thresholds"][0] <= 0.9
    with rasterio.open(m) as dm:
        assert (dm.read(1) == ((fv >= res["thresholds"][0]) & (hv >= 2))).all()
    assert (tmp_path / "uh.tif").exists() and not (tmp_path / "uf.tif").exists()


def test_cli_errors_exit_2_without_output(thu_dir, thu_checkpoint, tmp_path, capsys):
    rc = main(["height-footprint", str(thu_dir / "thu_s1_2020.tif"), str(thu_dir / "thu_s2_synthetic.tif"),
               str(thu_dir / "thu_srtm.tif"), str(thu_checkpoint), str(tmp_path / "h.tif"), str(tmp_path / "f.tif"),
               "--extent", "116.31,39.99,116.32,40.0", "--resolution", "1000", "--device", "cpu"])
    assert rc == 2 and "CHECKPOINT: is a 100 m model but 1000 m" in capsys.readouterr().err
    dem = str(thu_dir / "thu_srtm.tif")
    rc = main(["ccap", str(tmp_path / "m.tif"), "--height", dem, "--height", dem, "--footprint", dem])
    assert rc == 2 and "--footprint: 1 footprint raster(s) for 2 height raster(s)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_reference_grids_cli(tmp_path, capsys):
    import pyogrio
    import shapely
    geoms = [shapely.box(500010, 4400010, 500060, 4400060), shapely.box(500110, 4400010, 500130, 4400090)]
    pyogrio.raw.write(str(tmp_path / "b.gpkg"), shapely.to_wkb(np.asarray(geoms, dtype=object)),
                      [np.array([10.0, 4.0])], ["h"], driver="GPKG", geometry_type="Polygon", crs="EPSG:32650")
    rc = main(["reference-grids", str(tmp_path / "b.gpkg"), str(tmp_path / "lam.tif"), str(tmp_path / "hav.tif"),
               "--height-field", "h", "--extent", "500000,4400000,500200,4400100", "--no-filters"])
    assert rc == 0
    with rasterio.open(tmp_path / "lam.tif") as a, rasterio.open(tmp_path / "hav.tif") as b:
        lam, hav = a.read(1), b.read(1)
    assert np.allclose(lam[0], [0.25, 0.16]) and np.allclose(hav[0], [10.0, 4.0])
    assert main(["reference-grids", str(tmp_path / "b.gpkg"), str(tmp_path / "x.tif"), str(tmp_path / "y.tif"),
                 "--height-field", "height"]) == 2
    assert "HEIGHT_FIELD" in capsys.readouterr().err
