"""A STAC catalogue over the THU extent for tests/servers/stac_standin.py, made from the THU samples so
the composites it gives are known: every scene is the sample repeated periodically beyond its edges
(as the Earth Engine stand-in does) on the sample's own grid, over ``area`` (degrees, EPSG:4326).

- Sentinel-2 L2A (``sentinel-2-l2a``, Planetary Computer asset names): three scenes of 2020, the sample
  minus 100 DN, as is, plus 200 DN; one has a cloud (SCL 9) over a disc. Median: the sample itself where
  all three are clear, the mean of the other two under the cloud.
- Sentinel-1 RTC (``sentinel-1-rtc``): three IW scenes of 2020, linear power of the sample's dB shifted
  by -1, 0 and +2 dB. Median in dB: the sample.
- DEM (``cop-dem-glo-30``): one tile, the sample.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

ROOT = Path(__file__).resolve().parents[2]
THU = ROOT / "samples" / "thu"
S2_SHIFTS = (-100, 0, 200)
S1_SHIFTS_DB = (-1.0, 0.0, 2.0)
#: scene index with a cloud, and the cloud's centre (fraction of the area) and radius (pixels of 20 m)
CLOUD = (1, (0.5, 0.5), 40)


def wrapped(sample: Path, area: tuple[float, float, float, float]):
    """(bands as float64 with NaN for nodata, transform) of ``sample`` repeated periodically over ``area``
    on the sample's grid (its pixel size, its pixel edges)."""
    with rasterio.open(sample) as ds:
        data = ds.read().astype(np.float64)
        if ds.nodata is not None:
            data[data == ds.nodata] = np.nan
        t = ds.transform
    c0 = int(np.floor((area[0] - t.c) / t.a))
    c1 = int(np.ceil((area[2] - t.c) / t.a))
    r0 = int(np.floor((area[3] - t.f) / t.e))
    r1 = int(np.ceil((area[1] - t.f) / t.e))
    rows = np.arange(r0, r1) % data.shape[1]
    cols = np.arange(c0, c1) % data.shape[2]
    return data[:, rows[:, None], cols[None, :]], t @ Affine.translation(c0, r0)


def _write(path: Path, data: np.ndarray, transform, nodata) -> None:
    prof = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1, "dtype": data.dtype.name,
            "crs": "EPSG:4326", "transform": transform, "nodata": nodata, "tiled": True, "blockxsize": 256,
            "blockysize": 256, "compress": "deflate"}
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data, 1)


def _item(iid, collection, date, transform, shape, assets: dict, **props) -> dict:
    x0, y1 = transform.c, transform.f
    x1, y0 = x0 + transform.a * shape[1], y1 + transform.e * shape[0]
    return {"type": "Feature", "stac_version": "1.0.0", "id": iid, "collection": collection,
            "bbox": [x0, y0, x1, y1],
            "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
            "properties": {"datetime": f"{date}T03:00:00Z", **props}, "links": [],
            "assets": {k: {"href": "{base}/files/" + v, "type": "image/tiff; application=geotiff"}
                       for k, v in assets.items()}}


def _s2(files: Path, area) -> list[dict]:
    data, t = wrapped(THU / "thu_s2_synthetic.tif", area)
    h, w = data.shape[1] - data.shape[1] % 2, data.shape[2] - data.shape[2] % 2
    data = data[:, :h, :w]
    items = []
    for i, shift in enumerate(S2_SHIFTS):
        scl = np.full((h // 2, w // 2), 4, np.uint8)
        if i == CLOUD[0]:
            yy, xx = np.mgrid[0:h // 2, 0:w // 2]
            cy, cx = CLOUD[1][1] * h / 2, CLOUD[1][0] * w / 2
            scl[(yy - cy) ** 2 + (xx - cx) ** 2 < CLOUD[2] ** 2] = 9
        names = {"SCL": f"thu_s2_{i}_SCL.tif"}
        _write(files / names["SCL"], scl, t @ Affine.scale(2), 0)
        for name, band in zip(("B04", "B03", "B02", "B08"), data):
            names[name] = f"thu_s2_{i}_{name}.tif"
            _write(files / names[name], np.where(np.isfinite(band), band + shift, 0).clip(0, 65535).astype(np.uint16),
                   t, 0)
        items.append(_item(f"thu_s2_{i}", "sentinel-2-l2a", f"2020-0{3 + 3 * i}-10", t, (h, w), names,
                           **{"eo:cloud_cover": 5.0, "s2:processing_baseline": "02.14"}))
    return items


def _s1(files: Path, area) -> list[dict]:
    db, t = wrapped(THU / "thu_s1_2020.tif", area)
    items = []
    for i, shift in enumerate(S1_SHIFTS_DB):
        names = {}
        for k, pol in enumerate(("vv", "vh")):
            names[pol] = f"thu_s1_{i}_{pol}.tif"
            lin = np.where(np.isfinite(db[k]), 10.0 ** ((db[k] + shift) / 10.0), -9999.0).astype(np.float32)
            _write(files / names[pol], lin, t, -9999.0)
        items.append(_item(f"thu_s1_{i}", "sentinel-1-rtc", f"2020-0{2 + 3 * i}-01", t, db.shape[1:], names,
                           **{"sar:instrument_mode": "IW", "sar:polarizations": ["VV", "VH"]}))
    return items


def _dem(files: Path, area) -> list[dict]:
    dem, t = wrapped(THU / "thu_srtm.tif", area)
    _write(files / "thu_dem.tif", np.where(np.isfinite(dem[0]), dem[0], -32768).astype(np.int16), t, -32768)
    return [_item("thu_dem", "cop-dem-glo-30", "2021-04-22", t, dem.shape[1:], {"data": "thu_dem.tif"})]


def build(root: Path, area: tuple[float, float, float, float]) -> Path:
    """Write ``root/items.json`` and ``root/files/`` (the catalogue of this module over ``area``)."""
    files = Path(root) / "files"
    files.mkdir(parents=True, exist_ok=True)
    items = _s2(files, area) + _s1(files, area) + _dem(files, area)
    (Path(root) / "items.json").write_text(json.dumps(items))
    return Path(root)
