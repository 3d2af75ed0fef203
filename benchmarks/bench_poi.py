"""Benchmark: POI probability maps (edifice.core.poi_probability) on central
Helsinki, against GDAL proximity and a brute-force haversine search, with the
error of our distances against exact WGS84 geodesics.

Data: Helsinki.osm.pbf from ../shared/data/helsinki next to the repository when
present, else the bundled samples/helsinki (the same file), layer 'points', field
'other_tags', classified with the 'osm' preset (© OpenStreetMap contributors,
ODbL). Grid: EPSG:3067, extent 385000,6671500,386500,6673500 at 1 m
(1500 x 2000 = 3 Mpx); d_max = 500, 500, 1500 m (R, C, I). Throughput is
pixels per second for all three classes (one pixel = three distances).

 * ours: poi_probability(pois, grid, out, max_distances), file written
   (compressed GeoTIFF, overviews); best of --repeat runs.
 * GDAL: per class, POIs reprojected to EPSG:3067 and put in an in-memory OGR
   layer (not timed), gdal.RasterizeLayer + gdal.ComputeProximity
   (DISTUNITS=GEO, MAXDIST=d_max) on an in-memory raster (timed, nothing
   written). Planar distance between pixel centres in the projection, not
   geodesic; POIs snap to their pixel. Timed on (a1) the same grid, which
   ignores POIs outside it, and (a2) the grid buffered by d_max of the class
   (what gives the same answer as ours), cropped back.
 * brute force: --sample random pixels (seeded), haversine (mean radius
   6371008.8 m) to every POI of each class, numpy, chunked.
 * exact: for the same pixels, pyproj.Geod('+ellps=WGS84').inv to every POI
   within 1 % (+1 m) of the brute-force haversine minimum; the minimum is the
   exact geodesic nearest distance. Ours is recovered as d = (1 - p) d_max
   where p > 0.
 * memory: peak resident memory (VmHWM of /proc/self/status, else
   ru_maxrss) of a fresh subprocess that loads and classifies the POIs and
   writes the maps on the grid at 1 m (1x) and at 0.5 m (4x the pixels, same
   extent and POIs); printed with the peak before poi_probability runs, so
   the growth with raster area shows (--no-memory skips it). Measured (2 shared
   cores): RSS 172 MiB with the POIs loaded (peak 243 MiB while reading the
   PBF); peak 243 MiB at 1x (3 Mpx) and 259 MiB at 4x (12 Mpx): the maps add
   71 vs 86 MiB above the loaded state, block-bounded, not 4x.

    cd /work/main && source scripts/env.sh && python benchmarks/bench_poi.py
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def data_dir(name: str) -> Path:
    """``../shared/data/<name>`` next to the repository when present, else the bundled ``samples/<name>``."""
    shared = ROOT.parent / "shared" / "data" / name
    return shared if shared.is_dir() else ROOT / "samples" / name


PBF = str(data_dir("helsinki") / "Helsinki.osm.pbf")
EXTENT = (385000.0, 6671500.0, 386500.0, 6673500.0)
R_MEAN = 6371008.8


def haversine_min(lon_p, lat_p, lon_q, lat_q, chunk=2000):
    """Per pixel: (min haversine distance in m, index of that POI), in chunks of pixels."""
    lp, pp = np.radians(lon_p), np.radians(lat_p)
    lq, pq = np.radians(lon_q), np.radians(lat_q)
    cq = np.cos(pq)
    dmin = np.empty(len(lp))
    amin = np.empty(len(lp), np.int64)
    for s in range(0, len(lp), chunk):
        e = slice(s, s + chunk)
        dphi = pq[None, :] - pp[e, None]
        dlam = lq[None, :] - lp[e, None]
        h = np.sin(dphi / 2) ** 2 + np.cos(pp[e, None]) * cq[None, :] * np.sin(dlam / 2) ** 2
        d = 2 * R_MEAN * np.arcsin(np.sqrt(np.minimum(h, 1.0)))
        amin[e] = d.argmin(axis=1)
        dmin[e] = d[np.arange(d.shape[0]), amin[e]]
    return dmin, amin


def gdal_proximity(xq, yq, grid, dmax, buffer: bool):
    """Rasterise the class's POIs (EPSG:3067 x/y) and run ComputeProximity; returns
    (distance array on ``grid`` with NaN beyond d_max, seconds for rasterise + proximity)."""
    from osgeo import gdal, ogr, osr

    gdal.UseExceptions()
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(3067)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    vds = ogr.GetDriverByName("Memory").CreateDataSource("")
    lyr = vds.CreateLayer("pois", srs, ogr.wkbPoint)
    for x, y in zip(xq, yq):
        f = ogr.Feature(lyr.GetLayerDefn())
        pt = ogr.Geometry(ogr.wkbPoint)
        pt.AddPoint_2D(float(x), float(y))
        f.SetGeometry(pt)
        lyr.CreateFeature(f)
    t = grid.transform
    pad = int(np.ceil(dmax / t.a)) if buffer else 0
    w, h = grid.width + 2 * pad, grid.height + 2 * pad
    mem = gdal.GetDriverByName("MEM")
    t0 = time.perf_counter()
    src = mem.Create("", w, h, 1, gdal.GDT_Byte)
    src.SetGeoTransform((t.c - pad * t.a, t.a, 0, t.f + pad * t.a, 0, t.e))
    src.SetProjection(srs.ExportToWkt())
    gdal.RasterizeLayer(src, [1], lyr, burn_values=[1])
    dst = mem.Create("", w, h, 1, gdal.GDT_Float32)
    dst.SetGeoTransform(src.GetGeoTransform())
    dst.SetProjection(src.GetProjection())
    gdal.ComputeProximity(src.GetRasterBand(1), dst.GetRasterBand(1),
                          ["VALUES=1", "DISTUNITS=GEO", f"MAXDIST={dmax}", "NODATA=-1"])
    d = dst.GetRasterBand(1).ReadAsArray()
    sec = time.perf_counter() - t0
    d = d[pad:pad + grid.height, pad:pad + grid.width].astype(np.float64)
    d[(d < 0) | (d > dmax)] = np.nan
    return d, sec


def _proc_status_mib(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (VmHWM; ru_maxrss where /proc is missing)."""
    hwm = _proc_status_mib("VmHWM")
    if hwm is not None:
        return hwm
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def memory_child(pixel_size: float) -> None:
    """Run in a fresh process: load the POIs, write the maps at ``pixel_size``; print peaks as JSON."""
    from edifice.core.grid import Grid
    from edifice.core.poi_probability import DEFAULT_MAX_DISTANCES, poi_probability
    from edifice.core.poi_sources import classify_pois, load_poi_mapping, read_point_file

    xs, ys, recs, crs = read_point_file(PBF, "points", "other_tags")
    pois = classify_pois(xs, ys, recs, "other_tags", load_poi_mapping("osm"), crs).pois
    grid = Grid.from_extent(*EXTENT, pixel_size, "EPSG:3067")
    before, rss = peak_rss_mib(), _proc_status_mib("VmRSS")
    with tempfile.TemporaryDirectory(prefix="bench_poi_mem_") as tmp:
        t = time.perf_counter()
        poi_probability(pois, grid, f"{tmp}/poi.tif", DEFAULT_MAX_DISTANCES)
        sec = time.perf_counter() - t
    print(json.dumps({"pixels": grid.width * grid.height, "peak_before_mib": before, "rss_before_mib": rss,
                      "peak_mib": peak_rss_mib(), "seconds": sec}))


def memory_figures() -> list[dict]:
    """Peak RSS of fresh processes at 1x and 4x the raster area (1 m and 0.5 m pixels)."""
    rows = []
    for scale, size in (("1x", 1.0), ("4x", 0.5)):
        r = subprocess.run([sys.executable, __file__, "--memory-child", str(size)], capture_output=True,
                           text=True, check=True)
        rows.append(dict(json.loads(r.stdout.strip().splitlines()[-1]), scale=scale))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", type=int, default=20000, help="random pixels for brute force / geodesic check")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of ours and GDAL (best kept)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory figures")
    ap.add_argument("--memory-child", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child)
        return

    import rasterio
    from pyproj import Geod, Transformer

    from edifice.core.grid import Grid
    from edifice.core.poi_probability import CLASSES, DEFAULT_MAX_DISTANCES, poi_probability
    from edifice.core.poi_sources import classify_pois, load_poi_mapping, read_point_file

    t = time.perf_counter()
    xs, ys, recs, crs = read_point_file(PBF, "points", "other_tags")
    cp = classify_pois(xs, ys, recs, "other_tags", load_poi_mapping("osm"), crs)
    t_load = time.perf_counter() - t
    pois = cp.pois
    grid = Grid.from_extent(*EXTENT, 1.0, "EPSG:3067")
    dmax = DEFAULT_MAX_DISTANCES
    mpx = grid.width * grid.height / 1e6

    with tempfile.TemporaryDirectory(prefix="bench_poi_") as tmp:
        out = f"{tmp}/poi.tif"
        t_ours = []
        for i in range(args.repeat):
            t = time.perf_counter()
            summary = poi_probability(pois, grid, out, dmax)
            t_ours.append(time.perf_counter() - t)
        with rasterio.open(out) as ds:
            p_ours = ds.read().astype(np.float64)
    t_ours_best = min(t_ours)

    # POIs per class in lon/lat (for geodesics) and EPSG:3067 (for GDAL)
    lon_all, lat_all = Transformer.from_crs(pois.crs_wkt, "EPSG:4326", always_xy=True).transform(pois.x, pois.y)
    x3067, y3067 = Transformer.from_crs(pois.crs_wkt, "EPSG:3067", always_xy=True).transform(pois.x, pois.y)
    cls = pois.class_index

    # (a) GDAL rasterise + proximity, same grid and buffered grid
    gdal_same, gdal_buf, gdal_err = 0.0, 0.0, []
    for k in range(3):
        sel = cls == k
        if not sel.any():
            continue
        best_same = min(gdal_proximity(x3067[sel], y3067[sel], grid, dmax[k], False)[1] for _ in range(args.repeat))
        runs = [gdal_proximity(x3067[sel], y3067[sel], grid, dmax[k], True) for _ in range(args.repeat)]
        gdal_same += best_same
        gdal_buf += min(r[1] for r in runs)
        d_g = runs[0][0]
        d_o = np.where(p_ours[k] > 0, (1 - p_ours[k]) * dmax[k], np.nan)
        both = np.isfinite(d_g) & np.isfinite(d_o)
        gdal_err.append(float(np.abs(d_g[both] - d_o[both]).max()) if both.any() else float("nan"))

    # (b) brute-force haversine on a random pixel sample
    rng = np.random.default_rng(0)
    n = args.sample
    rows = rng.integers(0, grid.height, n)
    cols = rng.integers(0, grid.width, n)
    tr = grid.transform
    px = tr.c + tr.a * (cols + 0.5)
    py = tr.f + tr.e * (rows + 0.5)
    t = time.perf_counter()
    lon_p, lat_p = Transformer.from_crs("EPSG:3067", "EPSG:4326", always_xy=True).transform(px, py)
    hav = []
    for k in range(3):
        sel = np.flatnonzero(cls == k)
        hav.append(haversine_min(lon_p, lat_p, lon_all[sel], lat_all[sel]) if len(sel) else None)
    t_brute = time.perf_counter() - t

    # (c) exact geodesic nearest distance for the sample, and our error
    geod = Geod("+ellps=WGS84")
    rows_out = []
    worst_rel, worst_abs, worst_hav_rel = 0.0, 0.0, 0.0
    n_cmp_total, n_mismatch_total = 0, 0
    t = time.perf_counter()
    for k in range(3):
        sel = np.flatnonzero(cls == k)
        if hav[k] is None:
            continue
        hmin, _ = hav[k]
        near = np.flatnonzero(hmin < dmax[k] * 1.02 + 1.0)
        dgeo = np.full(n, np.inf)
        for i in near:
            cand = sel[np.flatnonzero(haversine_min_row(lon_p[i], lat_p[i], lon_all[sel], lat_all[sel])
                                      <= hmin[i] * 1.01 + 1.0)]
            _, _, dd = geod.inv(np.full(len(cand), lon_p[i]), np.full(len(cand), lat_p[i]),
                                lon_all[cand], lat_all[cand])
            dgeo[i] = np.min(dd)
        p = p_ours[k][rows, cols]
        d_ours = (1 - p) * dmax[k]
        inside = (dgeo < dmax[k]) & (p > 0)
        mismatch = int(np.sum((dgeo < dmax[k]) != (p > 0)))
        ae = np.abs(d_ours[inside] - dgeo[inside])
        big = inside & (dgeo >= 1.0)
        re = np.abs(d_ours[big] - dgeo[big]) / dgeo[big]
        hre = np.abs(hmin[big] - dgeo[big]) / dgeo[big]
        rows_out.append((CLASSES[k], len(sel), int(inside.sum()), float(re.max()) if re.size else float("nan"),
                         float(ae.max()) if ae.size else float("nan"), mismatch,
                         float(hre.max()) if hre.size else float("nan")))
        if re.size:
            worst_rel = max(worst_rel, float(re.max()))
            worst_hav_rel = max(worst_hav_rel, float(hre.max()))
        if ae.size:
            worst_abs = max(worst_abs, float(ae.max()))
        n_cmp_total += int(inside.sum())
        n_mismatch_total += mismatch
    t_geod = time.perf_counter() - t

    print(f"POI probability benchmark: central Helsinki, EPSG:3067 1 m grid {grid.width}x{grid.height} "
          f"({mpx:.2f} Mpx), d_max {dmax} m, {os.cpu_count()} CPU(s)")
    print(f"    POIs (osm preset): {cp.counts} of {len(pois.x)} points; load + classify {t_load:.2f} s (not timed below)")
    print("(a) throughput, 3 classes per pixel              seconds    Mpx/s  t/t_ours")
    print(f"    ours poi_probability (geodesic, file out)   {t_ours_best:7.2f} {mpx / t_ours_best:8.2f}     1.00x"
          f"   (runs {', '.join(f'{x:.2f}' for x in t_ours)} s, lattice step {summary['lattice_step']} px)")
    print(f"    GDAL rasterise+proximity, same grid        {gdal_same:7.2f} {mpx / gdal_same:8.2f} "
          f"   {gdal_same / t_ours_best:6.2f}x   (planar, in memory; ignores POIs off the grid)")
    print(f"    GDAL rasterise+proximity, grid + d_max     {gdal_buf:7.2f} {mpx / gdal_buf:8.2f} "
          f"   {gdal_buf / t_ours_best:6.2f}x   (planar, in memory; same POIs as ours)")
    print("    GDAL vs ours, max |d_gdal - d_ours| (d < d_max): "
          + ", ".join(f"{c} {e:.3f} m" for c, e in zip(CLASSES, gdal_err)))
    print(f"(b) brute-force haversine (numpy), {n} random px x all POIs of each class, 3 classes")
    print(f"    {t_brute:7.2f} s  ->  {n / 1e6 / t_brute:8.4f} Mpx/s   (ours is {mpx / t_ours_best / (n / 1e6 / t_brute):.0f}x faster per pixel)")
    print(f"(c) ours vs exact WGS84 geodesic (pyproj Geod.inv to the brute-force nearest candidates, {t_geod:.1f} s)")
    print("    class         POIs  px with d<d_max  max rel err (d>=1 m)  max abs err (m)  p>0 vs d<d_max mismatches  haversine max rel err")
    for name, npoi, ncmp, re, ae, mm, hre in rows_out:
        print(f"    {name:<12s} {npoi:5d} {ncmp:16d} {re:21.2e} {ae:16.2e} {mm:27d} {hre:22.2e}")
    if not args.no_memory:
        print("(d) peak resident memory (VmHWM) of a fresh process: POIs loaded, then poi_probability writes the maps")
        print("    area   pixels     RSS before maps  peak before maps  peak (MiB)  peak - RSS before  seconds")
        mem = memory_figures()
        for m in mem:
            rss = m["rss_before_mib"] if m["rss_before_mib"] is not None else float("nan")
            print(f"    {m['scale']:<5s} {m['pixels'] / 1e6:5.1f} Mpx {rss:15.0f} {m['peak_before_mib']:17.0f}"
                  f" {m['peak_mib']:11.0f} {m['peak_mib'] - rss:18.0f} {m['seconds']:8.2f}")
        print(f"SUMMARY poi memory: peak RSS {mem[0]['peak_mib']:.0f} MiB at 1x ({mem[0]['pixels'] / 1e6:.0f} Mpx) vs "
              f"{mem[1]['peak_mib']:.0f} MiB at 4x ({mem[1]['pixels'] / 1e6:.0f} Mpx)")
    print(f"SUMMARY poi: ours {mpx / t_ours_best:.2f} Mpx/s vs GDAL proximity {mpx / gdal_same:.2f} (same grid) / "
          f"{mpx / gdal_buf:.2f} (buffered) Mpx/s vs brute-force haversine {n / 1e6 / t_brute:.4f} Mpx/s; "
          f"max rel err vs WGS84 geodesic {worst_rel:.1e} (max abs {worst_abs * 1000:.3f} mm) over {n_cmp_total} "
          f"pixel-class pairs, {n_mismatch_total} p>0/d<d_max mismatches")


def haversine_min_row(lon, lat, lon_q, lat_q):
    """Haversine distances (m) from one point to many."""
    p, q = np.radians(lat), np.radians(lat_q)
    h = np.sin((q - p) / 2) ** 2 + np.cos(p) * np.cos(q) * np.sin(np.radians(lon_q - lon) / 2) ** 2
    return 2 * R_MEAN * np.arcsin(np.sqrt(np.minimum(h, 1.0)))


if __name__ == "__main__":
    main()
