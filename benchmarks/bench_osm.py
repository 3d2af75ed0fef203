"""OSM download of a 25 km² area served locally (Overpass stand-in, a real process on 127.0.0.1).

The stand-in's database is the Helsinki extract (samples/helsinki/Helsinki.osm.pbf, ~1.7 km²) copied
N x N times over a 5 km x 5 km square around it (new ids, shifted coordinates), so the 25 km² extent
holds N² city centres. Measured in one run:
  * reference: the same Overpass queries sent with plain ``requests.post`` (transfer only);
  * edifice osm-download (queries, parsing, multipolygon assembly, GeoPackage writing), cold cache;
  * the same download again: every answer from the response cache.
Figures are printed as seconds and as ratios to the reference.

    python benchmarks/bench_osm.py [--copies 3] [--max-tile-km2 25]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent))  # the repository root is the package 'edifice'
SIDE_M = 5000.0


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiled_database(elements: list[dict], copies: int, dlon: float, dlat: float) -> list[dict]:
    """``copies`` x ``copies`` copies of ``elements``, shifted by (dlon, dlat) degrees per step, ids offset."""
    step = 10 ** (len(str(max(e["id"] for e in elements))) + 1)
    out = []
    for i in range(copies):
        for j in range(copies):
            off = (i * copies + j) * step
            for e in elements:
                c = dict(e, id=e["id"] + off)
                if "lat" in c:
                    c["lat"], c["lon"] = e["lat"] + i * dlat, e["lon"] + j * dlon
                if "nodes" in c:
                    c["nodes"] = [r + off for r in e["nodes"]]
                if "members" in c:
                    c["members"] = [dict(m, ref=m["ref"] + off) for m in e["members"]]
                out.append(c)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--max-tile-km2", type=float, default=25.0)
    a = ap.parse_args()
    import requests
    from pyproj import Transformer

    from edifice.core.acquire.osm import OsmRequest, download_osm, layer_queries
    from edifice.core.acquire.overpass import split_bbox, wgs84_bbox

    extract = _module(ROOT / "tests" / "servers" / "overpass_extract.py")
    standin = _module(ROOT / "tests" / "servers" / "standin.py")
    work = Path(tempfile.mkdtemp(prefix="bench_osm_"))
    elements, stamp = extract.read_elements(str(ROOT / "samples" / "helsinki" / "Helsinki.osm.pbf"))
    # the 5 km square centred on the extract (EPSG:3067), copies spread evenly over it
    to_tm = Transformer.from_crs(4326, 3067, always_xy=True)
    cx, cy = to_tm.transform(24.944, 60.1715)
    extent = (cx - SIDE_M / 2, cy - SIDE_M / 2, cx + SIDE_M / 2, cy + SIDE_M / 2)
    s, w, n, e = wgs84_bbox(extent, "EPSG:3067")
    shift_lat, shift_lon = (n - s) / a.copies, (e - w) / a.copies
    first_lat, first_lon = s + shift_lat / 2 - 60.1715, w + shift_lon / 2 - 24.944
    shifted = [dict(el, lat=el["lat"] + first_lat, lon=el["lon"] + first_lon) if "lat" in el else el for el in elements]
    db = extract.write_elements(tiled_database(shifted, a.copies, shift_lon, shift_lat), stamp, str(work / "db.json"))
    server = standin.start_standin(ROOT / "tests" / "servers" / "overpass_standin.py", work / "state", [db],
                                   timeout_s=300)
    try:
        url = server.url + "/api/interpreter"
        req = OsmRequest(extent, "EPSG:3067", {"pois": str(work / "osm.gpkg"), "buildings": str(work / "osm.gpkg")},
                         endpoint=url, max_tile_km2=a.max_tile_km2, cache_dir=str(work / "cache"))
        tiles = split_bbox((s, w, n, e), a.max_tile_km2)
        queries = layer_queries("pois", tiles, req.timeout_s) + layer_queries("buildings", tiles, req.timeout_s)
        t0 = time.perf_counter()
        size = sum(len(requests.post(url, data={"data": q}, timeout=600).content) for q in queries)
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        cold = download_osm(req)
        t_cold = time.perf_counter() - t0
        req.outputs = {k: str(work / "osm2.gpkg") for k in req.outputs}
        t0 = time.perf_counter()
        warm = download_osm(req)
        t_warm = time.perf_counter() - t0
    finally:
        server.stop()
    print(f"area {SIDE_M / 1000:g} km x {SIDE_M / 1000:g} km = {SIDE_M ** 2 / 1e6:g} km², "
          f"{a.copies}x{a.copies} copies "
          f"of the Helsinki extract; {len(tiles)} tile(s) per layer, {len(queries)} queries, "
          f"{size / 1e6:.1f} MB of answers")
    print(f"features: {cold['pois']['total']} POIs, {cold['buildings']['total']} buildings "
          f"({cold['buildings']['not_assembled']} not assembled: members cut by the extract)")
    print(f"reference (requests.post of the same queries, transfer only): {t_ref:.2f} s")
    print(f"osm-download, cold cache: {t_cold:.2f} s = {t_cold / t_ref:.2f} x reference "
          f"({cold['queries']} queries sent)")
    print(f"osm-download, cached re-run: {t_warm:.2f} s = {t_warm / t_ref:.2f} x reference, "
          f"{t_warm / t_cold:.2f} x the cold run ({warm['queries']} queries sent, {warm['from_cache']} from the cache)")
    print(json.dumps({"reference_s": t_ref, "cold_s": t_cold, "cached_s": t_warm,
                      "cold_over_reference": t_cold / t_ref, "cached_over_cold": t_warm / t_cold}))


if __name__ == "__main__":
    main()
