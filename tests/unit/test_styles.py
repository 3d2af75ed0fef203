"""core/styles.py: QML sidecars, palettes with class names, category names for GDAL, default styles
inside GeoPackages; the style files every writer names exist."""
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio.raw
import shapely

from edifice.core import styles
from edifice.core.use.building_use_map import _report_polygons
from edifice.core.progress import RecordingProgress

ROOT = Path(__file__).resolve().parents[2]


def test_every_named_style_exists():
    named = set()
    for path in (ROOT / "core").rglob("*.py"):
        named |= set(re.findall(r'"([a-z_0-9]+\.qml)"', path.read_text()))
    named |= {f"retinex_{t}.qml" for t in ("uint8", "uint16", "float32")}
    assert named and all((styles.STYLE_DIR / n).is_file() for n in named), named


def test_sidecar_and_palette(tmp_path):
    raster = tmp_path / "a.tif"
    raster.write_bytes(b"")
    styles.write_raster_style(raster, "height_m.qml")
    assert (tmp_path / "a.qml").read_text() == (styles.STYLE_DIR / "height_m.qml").read_text()
    classes = [(0, (0, 0, 0, 0), "none"), (1, (255, 16, 1, 200), 'R & "D"')]
    styles.write_raster_style(raster, classes=classes)
    qml = (tmp_path / "a.qml").read_text()
    assert qml.count("<paletteEntry") == 2
    assert '<paletteEntry value="1" color="#ff1001" alpha="200" label="R &amp; &quot;D&quot;"/>' in qml
    aux = (tmp_path / "a.tif.aux.xml").read_text()
    assert "<Category>none</Category>" in aux and "<F>R &amp; &quot;D&quot;</F>" in aux


def test_gpkg_default_style_replaces_earlier(tmp_path):
    gpkg = tmp_path / "b.gpkg"
    pyogrio.raw.write(str(gpkg), shapely.to_wkb(shapely.points([(0, 0)])), [np.array([1])], ["v"],
                      driver="GPKG", layer="buildings", geometry_type="Point", crs="EPSG:3857")
    styles.write_gpkg_style(gpkg, "buildings", "building_use_polygons.qml")
    styles.write_gpkg_style(gpkg, "buildings", "building_use_polygons.qml", "second")
    with sqlite3.connect(gpkg) as con:
        rows = con.execute("SELECT styleName, useAsDefault, f_geometry_column, styleQML FROM layer_styles "
                           "ORDER BY id").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("building_use_polygons", 0), ("second", 1)]
    assert rows[1][2] == "geom" and rows[1][3].startswith("<!DOCTYPE qgis")
    assert pyogrio.raw.read(str(gpkg), layer="buildings")[3][0].tolist() == [1]  # the data is untouched


def test_polygon_count_reported_and_empty_result_warned():
    log = RecordingProgress()
    _report_polygons(12, "b.gpkg", log)
    _report_polygons(0, "c.gpkg", log)
    assert log.infos == ["12 building polygon(s) written to b.gpkg."]
    assert log.warnings and log.warnings[0].startswith("No building was found: c.gpkg")


def test_retinex_cli_writes_its_sidecar(tmp_path, kampala_rgb):
    out = tmp_path / "r.tif"
    r = subprocess.run([sys.executable, "-m", "edifice.core.cli", "retinex", str(kampala_rgb), str(out),
                        "--sigmas", "5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r.qml").read_text() == (styles.STYLE_DIR / "retinex_uint8.qml").read_text()


def test_geopackages_are_written_as_version_1_3(tmp_path):
    """QGIS's older GDAL reads them without "may only be partially supported" noise."""
    from edifice.core.use.vectorize import _write_empty

    gpkg = tmp_path / "e.gpkg"
    _write_empty(gpkg, "EPSG:32636")
    with sqlite3.connect(gpkg) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 10300
    r = subprocess.run(["ogrinfo", "-so", "-al", str(gpkg)], capture_output=True, text=True)
    assert r.returncode == 0 and "partially supported" not in r.stdout + r.stderr
