"""Styles that travel with the outputs, however they are opened (QGIS from disk, qgis_process,
the CLI): a ``.qml`` sidecar next to each raster (QGIS loads ``<name>.qml`` as the layer's default
style), category names and a raster attribute table for class rasters (GDAL's ``.aux.xml``; the
colour table itself is inside the GeoTIFF), and a default style inside each output GeoPackage
(the ``layer_styles`` table QGIS reads on load).

The QML files live in ``qgis_plugin/styles/`` (the plugin's, shipped in the zip and the wheel);
core reads them as text and never imports qgis.
"""
from __future__ import annotations

import html
import os
import re
import sqlite3
from pathlib import Path

STYLE_DIR = Path(__file__).resolve().parent.parent / "qgis_plugin" / "styles"


def qml_text(name: str) -> str:
    """The text of ``qgis_plugin/styles/<name>``."""
    return (STYLE_DIR / name).read_text(encoding="utf-8")


def paletted_qml(classes) -> str:
    """A paletted-raster QML (use_class.qml's, with its palette replaced) for ``classes``:
    (value, (r, g, b, a), label) in legend order."""
    entries = "\n".join(
        f'        <paletteEntry value="{int(v)}" color="#{r:02x}{g:02x}{b:02x}" alpha="{a}" '
        f'label="{html.escape(str(label), quote=True)}"/>' for v, (r, g, b, a), label in classes)
    return re.sub(r"<colorPalette>.*?</colorPalette>", lambda m: f"<colorPalette>\n{entries}\n      </colorPalette>",
                  qml_text("use_class.qml"), flags=re.S)


def sidecar_path(raster: str | os.PathLike) -> Path:
    """``a/b.tif`` -> ``a/b.qml`` (the file QGIS looks for)."""
    return Path(raster).with_suffix(".qml")


def write_raster_style(raster: str | os.PathLike, qml_name: str | None = None, classes=None) -> None:
    """Write the QML sidecar of ``raster`` (``qml_name`` from the styles folder, else a palette made from
    ``classes`` = [(value, rgba, label)]) and, with ``classes``, its category names and attribute table."""
    text = qml_text(qml_name) if qml_name else paletted_qml(classes)
    sidecar_path(raster).write_text(text, encoding="utf-8")
    if classes:
        _write_categories(raster, classes)


def _write_categories(raster, classes) -> None:
    """Category names (one per value from 0 to the largest class) and a raster attribute table
    (Value, Name, Red, Green, Blue, Alpha) for band 1, in GDAL's PAM file ``<raster>.aux.xml``."""
    names = {int(v): str(label) for v, _, label in classes}
    categories = "".join(f"<Category>{html.escape(names.get(i, ''))}</Category>"
                         for i in range(max(names) + 1))
    cols = [("Value", 0, 5), ("Name", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8), ("Alpha", 0, 9)]
    fields = "".join(f'<FieldDefn index="{i}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage></FieldDefn>'
                     for i, (n, t, u) in enumerate(cols))
    rows = "".join(f'<Row index="{i}"><F>{int(v)}</F><F>{html.escape(str(label))}</F>'
                   + "".join(f"<F>{c}</F>" for c in rgba) + "</Row>"
                   for i, (v, rgba, label) in enumerate(classes))
    Path(str(raster) + ".aux.xml").write_text(
        f'<PAMDataset>\n  <PAMRasterBand band="1">\n    <CategoryNames>\n{categories}</CategoryNames>\n'
        f'    <GDALRasterAttributeTable tableType="thematic">{fields}{rows}</GDALRasterAttributeTable>\n'
        "  </PAMRasterBand>\n</PAMDataset>\n", encoding="utf-8")


_LAYER_STYLES = """CREATE TABLE IF NOT EXISTS layer_styles (
  id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), f_table_schema TEXT(256),
  f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
  useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
  update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"""


def write_gpkg_style(gpkg: str | os.PathLike, layer: str, qml_name: str, style_name: str | None = None) -> None:
    """Save ``qml_name`` as the default style of ``layer`` inside ``gpkg`` (QGIS's ``layer_styles``
    table, as *Save as default* would), replacing an earlier default of that layer."""
    con = sqlite3.connect(str(gpkg))
    try:
        row = con.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)).fetchone()
        con.execute(_LAYER_STYLES)
        con.execute("UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (layer,))
        con.execute("INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
                    "styleName, styleQML, styleSLD, useAsDefault, description, owner) "
                    "VALUES ('', '', ?, ?, ?, ?, '', 1, 'Edifice default style', '')",
                    (layer, row[0] if row else "", style_name or Path(qml_name).stem, qml_text(qml_name)))
        con.commit()
    finally:
        con.close()


#: QML of each raster output of map_building_use that has a fixed style (class rasters get palettes)
USE_MAP_STYLES = {"footprint_probability": "footprint_probability.qml", "use_probabilities": "use_probabilities.qml"}
FOOTPRINT_CLASSES = [(0, (0, 0, 0, 0), "non-building"), (1, (220, 60, 40, 255), "building")]
BUILTUP_CLASSES = [(0, (0, 0, 0, 0), "not built-up"), (1, (255, 120, 0, 160), "built-up")]
CCAP_CLASSES = [(0, (0xe0, 0xe0, 0xe0, 255), "not urban"), (1, (0xd7, 0x30, 0x1f, 255), "urban")]


def use_classes(colormap: dict, names) -> list:
    """[(value, rgba, label)] of a use-class raster: class 0 (non-building) transparent, then ``names``."""
    labels = ["non-building", *names]
    return [(v, (0, 0, 0, 0) if v == 0 else tuple(colormap[v]), labels[v]) for v in range(len(labels))]


def write_use_map_styles(outputs: dict, colormap: dict, names) -> None:
    """Styles of map_building_use's raster ``outputs`` ({key: path}): sidecars, and palettes with
    category names for the footprint mask and the use classes (``colormap`` and class ``names``)."""
    for key, path in outputs.items():
        if key in USE_MAP_STYLES:
            write_raster_style(path, USE_MAP_STYLES[key])
        elif key == "footprint_mask":
            write_raster_style(path, classes=FOOTPRINT_CLASSES)
        elif key == "use_class":
            write_raster_style(path, classes=use_classes(colormap, names))
