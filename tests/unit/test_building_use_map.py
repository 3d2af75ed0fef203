"""edifice:mapbuildinguse / assignbuildinguse / builtupmask cores on the Kampala sample
with a random-weights checkpoint; bad input gives clear errors and no output."""
from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio
import torch
from affine import Affine
from scipy import ndimage

from edifice.core.use.building_use_map import assign_building_use, map_building_use
from edifice.core.use.builtup_mask import builtup_mask, parse_values
from edifice.core.errors import InputError
from edifice.core.use.vectorize import polygonize_buildings
from edifice.models.checkpoint import save_checkpoint

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
BUILDINGS = ROOT / "samples" / "kampala" / "buildings_osm.geojson"


@pytest.fixture
def mask(tmp_path, kampala_rgb):
    out = tmp_path / "mask.tif"
    builtup_mask(str(kampala_rgb), str(out), polygons=[str(BUILDINGS)])
    return out


def test_builtup_mask_union_of_rasters_and_polygons(tmp_path, kampala_rgb):
    with rasterio.open(kampala_rgb) as ds:
        t, crs, h, w = ds.transform, ds.crs, ds.height, ds.width
    # a 10 m class raster: value 80 built-up in its left half, 190 in one cell, 10 elsewhere
    cls = np.full((h // 20 + 1, w // 20 + 1), 10, np.uint8)
    cls[:, : cls.shape[1] // 2] = 80
    cls[5, -3] = 190
    coarse = tmp_path / "classes.tif"
    with rasterio.open(coarse, "w", driver="GTiff", width=cls.shape[1], height=cls.shape[0], count=1, dtype="uint8",
                       crs=crs, transform=t * Affine.scale(20)) as dst:
        dst.write(cls[None])
    out = tmp_path / "m.tif"
    s = builtup_mask(str(kampala_rgb), str(out), rasters=[(str(coarse), "80,190")], polygons=[str(BUILDINGS)])
    with rasterio.open(out) as ds:
        m = ds.read(1)
        assert ds.transform == t and ds.shape == (h, w)
    assert m[:, : (cls.shape[1] // 2) * 20].all()            # the raster's built-up half
    assert m[100:120, (cls.shape[1] - 3) * 20:(cls.shape[1] - 2) * 20].all()                        # the single 190 cell
    right = m[:, (cls.shape[1] // 2) * 20:]
    assert 0 < right.mean() < 0.5                             # polygons only
    assert 0 < s["builtup_fraction"] < 1
    assert list(parse_values("10-12, 80")) == [10, 11, 12, 80]
    with pytest.raises(InputError, match="VALUES"):
        parse_values("built")


def test_map_building_use_outputs(tmp_path, kampala_rgb, kampala_pois, tiny_use_checkpoint, mask):
    o = {k: tmp_path / f"{k}.tif" for k in ("fp", "fm", "uc", "up")}
    poly = tmp_path / "b.gpkg"
    s = map_building_use(str(kampala_rgb), str(tiny_use_checkpoint), poi_points=str(kampala_pois),
                         poi_category_field="other_tags", mask=str(mask), footprint_probability=str(o["fp"]),
                         footprint_mask=str(o["fm"]), use_class=str(o["uc"]), use_probabilities=str(o["up"]),
                         polygons=str(poly), window=256, overlap=32, batch_size=3, device="cpu",
                         probability_type="float32")  # float values tested (the default is uint8)
    assert s["device"] == "cpu" and s["tiles_skipped"] > 0
    with rasterio.open(kampala_rgb) as src, rasterio.open(o["fp"]) as fp, rasterio.open(o["fm"]) as fm, \
            rasterio.open(o["uc"]) as uc, rasterio.open(o["up"]) as up, rasterio.open(mask) as mk:
        assert src.transform == fp.transform == uc.transform and src.shape == up.shape
        valid = (src.read() != 0).all(axis=0) & (mk.read(1) == 1)
        p, b, c, u = fp.read(1), fm.read(1), uc.read(1), up.read()
        cmap = uc.colormap(1)
    assert (c[~valid] == 255).all() and (b[~valid] == 255).all() and (p[~valid] == -1).all()
    assert set(np.unique(c[valid])) <= {0, 1, 2, 3} and len(np.unique(c[valid])) >= 3
    assert ((p[valid] > 0.5) == (b[valid] == 1)).all()
    arg = np.argmax(u, axis=0) + 1
    bld = valid & (b == 1)
    assert (c[bld] == arg[bld]).all() and (c[valid & (b == 0)] == 0).all()
    assert cmap[2][:3] == (0xd7, 0x26, 0x3d)
    # polygons: one per 4-connected component of the mask, pixel counts and mean probabilities agree
    info = pyogrio.read_info(poly)
    _, _, _, fields = pyogrio.raw.read(poly)
    names = list(info["fields"])
    lab, n = ndimage.label(b == 1, structure=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    assert info["features"] == n == s["polygons"]["buildings"]
    pix = fields[names.index("pixels")]
    assert pix.sum() == bld.sum()
    assert np.allclose(fields[names.index("area_m2")], pix * 0.25)
    big = int(np.argmax(pix))
    comp = np.bincount(lab.ravel())[1:]
    k = int(np.argmax(comp)) + 1
    assert comp[k - 1] == pix[big]
    assert np.isclose(fields[names.index("p_commercial")][big], u[1][lab == k].mean(), atol=1e-5)
    assert fields[names.index("use_name")][big] in ("residential", "commercial", "industrial")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_polygons_merged_across_blocks(tmp_path, tiny_use_checkpoint, kampala_rgb, gradient_poi_maps):
    fm, up = tmp_path / "fm.tif", tmp_path / "up.tif"
    map_building_use(str(kampala_rgb), str(tiny_use_checkpoint), footprint_mask=str(fm),
                     use_probabilities=str(up), window=256, overlap=32,
                     poi_maps=gradient_poi_maps(tmp_path, kampala_rgb))
    one = polygonize_buildings(str(fm), str(up), str(tmp_path / "one.gpkg"), 0.25, block_size=4096)
    many = polygonize_buildings(str(fm), str(up), str(tmp_path / "many.gpkg"), 0.25, block_size=100)
    assert many["merged_across_blocks"] > 0 and one["buildings"] == many["buildings"]

    def table(p):
        info = pyogrio.read_info(p)
        _, _, wkb, f = pyogrio.raw.read(p)
        names = list(info["fields"])
        rows = sorted(zip(f[names.index("pixels")], np.round(f[names.index("p_residential")], 5),
                          f[names.index("use_class")]))
        return rows, sum(__import__("shapely").area(__import__("shapely").from_wkb(wkb)))

    (r1, a1), (r2, a2) = table(tmp_path / "one.gpkg"), table(tmp_path / "many.gpkg")
    assert r1 == r2 and np.isclose(a1, a2)


def test_resampled_when_the_gsd_differs(tmp_path, kampala_rgb, tiny_use_checkpoint, gradient_poi_maps):
    coarse = tmp_path / "k1m.tif"
    with rasterio.open(kampala_rgb) as src:
        a = src.read(out_shape=(3, src.height // 2, src.width // 2))
        prof = dict(src.profile, width=a.shape[2], height=a.shape[1], transform=src.transform * Affine.scale(2))
    with rasterio.open(coarse, "w", **prof) as dst:
        dst.write(a)
    msgs = []

    class P(__import__("edifice.core.progress", fromlist=["Progress"]).Progress):
        def warning(self, m):
            msgs.append(m)

    out = tmp_path / "uc.tif"
    map_building_use(str(coarse), str(tiny_use_checkpoint), use_class=str(out), window=256, overlap=32,
                     progress=P(), poi_maps=gradient_poi_maps(tmp_path, kampala_rgb))
    assert any("resampled" in m for m in msgs)
    with rasterio.open(out) as ds:
        assert ds.res == (0.5, 0.5) and abs(ds.width - 2 * a.shape[2]) <= 1


def test_assign_building_use_keeps_attributes(tmp_path, kampala_rgb, tiny_use_checkpoint, gradient_poi_maps):
    up = tmp_path / "up.tif"
    map_building_use(str(kampala_rgb), str(tiny_use_checkpoint), use_probabilities=str(up), window=256,
                     overlap=32, poi_maps=gradient_poi_maps(tmp_path, kampala_rgb), probability_type="float32")
    out = tmp_path / "assigned.gpkg"
    s = assign_building_use(str(BUILDINGS), str(up), str(out))
    src_info, out_info = pyogrio.read_info(BUILDINGS), pyogrio.read_info(out)
    assert out_info["features"] == src_info["features"] == s["buildings"]
    assert set(src_info["fields"]) < set(out_info["fields"])
    _, _, wkb, f = pyogrio.raw.read(out)
    names = list(out_info["fields"])
    cls = f[names.index("use_class")]
    assert s["without_probabilities"] < len(cls) and set(np.unique(cls)) <= {0, 1, 2, 3}
    # one building checked by hand: the mean over the pixels whose centres it holds
    import shapely
    from rasterio import features
    from pyproj import Transformer

    k = int(np.argmax(f[names.index("pixels")]))
    g = shapely.from_wkb(wkb[k])
    with rasterio.open(up) as ds:
        tr = Transformer.from_crs(src_info["crs"], ds.crs.to_wkt(), always_xy=True)
        g = shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        inside = features.geometry_mask([g], ds.shape, ds.transform, invert=True)
        p = ds.read()
    ok = inside & (p[0] != -1)
    assert np.isclose(f[names.index("p_industrial")][k], p[2][ok].mean(), atol=1e-5)


# ---------------------------------------------------------------- bad input
def _bad(tmp_path, imagery, ck, match, **kw):
    out = tmp_path / "out" / "uc.tif"
    with pytest.raises(InputError, match=match):
        map_building_use(str(imagery), str(ck), use_class=str(out), window=256, overlap=32, **kw)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_bad_inputs_have_clear_messages(tmp_path, kampala_rgb, tiny_use_checkpoint, gradient_poi_maps):
    pois = {"poi_maps": gradient_poi_maps(tmp_path, kampala_rgb)}
    with rasterio.open(kampala_rgb) as src:
        prof, a = src.profile, src.read()
    four = tmp_path / "four.tif"
    with rasterio.open(four, "w", **dict(prof, count=4)) as dst:
        dst.write(np.concatenate([a, a[:1]]))
    _bad(tmp_path, four, tiny_use_checkpoint, "IMAGERY.*4 band", **pois)
    u16 = tmp_path / "u16.tif"
    with rasterio.open(u16, "w", **dict(prof, dtype="uint16")) as dst:
        dst.write(a.astype(np.uint16) * 100)
    _bad(tmp_path, u16, tiny_use_checkpoint, "IMAGERY.*uint16", **pois)
    geo = tmp_path / "geo.tif"
    with rasterio.open(geo, "w", **dict(prof, crs="EPSG:4326", transform=Affine(1e-5, 0, 32, 0, -1e-5, 0.35))) as dst:
        dst.write(a)
    _bad(tmp_path, geo, tiny_use_checkpoint, "geographic", **pois)
    _bad(tmp_path, kampala_rgb, tiny_use_checkpoint, "POI_MAPS")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not really a checkpoint")
    _bad(tmp_path, kampala_rgb, corrupt, "CHECKPOINT", **pois)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    _bad(tmp_path, kampala_rgb, foreign, "CHECKPOINT.*not an Edifice checkpoint", **pois)
    other = tmp_path / "height.pt"
    from edifice.models.checkpoint import load_checkpoint
    state, card = load_checkpoint(tiny_use_checkpoint)
    save_checkpoint(other, state, dict(card, task="height_footprint"))
    _bad(tmp_path, kampala_rgb, other, "CHECKPOINT.*not a building-use", **pois)
    if not torch.cuda.is_available():
        _bad(tmp_path, kampala_rgb, tiny_use_checkpoint, "DEVICE", device="cuda:7", **pois)
    _bad(tmp_path, kampala_rgb, tiny_use_checkpoint, "DEVICE", device="gpu0", **pois)
    empty = tmp_path / "empty_mask.tif"
    with rasterio.open(empty, "w", **dict(prof, count=1, nodata=None)) as dst:
        dst.write(np.zeros((1,) + a.shape[1:], np.uint8))
    _bad(tmp_path, kampala_rgb, tiny_use_checkpoint, "MASK.*covers none", mask=str(empty), **pois)
    with pytest.raises(InputError, match="WINDOW"):
        map_building_use(str(kampala_rgb), str(tiny_use_checkpoint), use_class=str(tmp_path / "x.tif"),
                         window=250, overlap=32, **pois)
    # automatic is "left out" (None) everywhere; 0 and -1 are no longer magic values in core and the CLI
    for kw, named in (({"window": 0, "overlap": 32}, "WINDOW: 0 px is not a window size.*Fix: leave the window out"),
                      ({"window": 256, "overlap": -1}, "OVERLAP: -1 px is not a margin.*Fix: leave the overlap out")):
        with pytest.raises(InputError, match=named):
            map_building_use(str(kampala_rgb), str(tiny_use_checkpoint), use_class=str(tmp_path / "x.tif"),
                             **kw, **pois)
    assert not (tmp_path / "x.tif").exists()


# ---------------------------------------------------------------- layers not on the imagery grid
class _Warnings(__import__("edifice.core.progress", fromlist=["Progress"]).Progress):
    def __init__(self):
        self.warnings = []

    def warning(self, m):
        self.warnings.append(m)


def _poi_like(tmp_path, kampala_rgb, name, shift=0.0, scale=1.0, crs=None):
    with rasterio.open(kampala_rgb) as src:
        t, h, w, c = src.transform, src.height, src.width, src.crs
    t2 = Affine(t.a * scale, 0, t.c + shift, 0, t.e * scale, t.f)
    p = np.full((3, int(h / scale), int(w / scale)), 0.3, np.float32)
    path = tmp_path / name
    with rasterio.open(path, "w", driver="GTiff", width=p.shape[2], height=p.shape[1], count=3, dtype="float32",
                       crs=crs or c, transform=t2, nodata=-1.0) as dst:
        dst.write(p)
    return path


def test_poi_maps_off_grid_are_announced_and_refused_when_elsewhere(tmp_path, kampala_rgb, tiny_use_checkpoint,
                                                                    gradient_poi_maps):
    uc = tmp_path / "uc.tif"
    coarse = _poi_like(tmp_path, kampala_rgb, "poi_2x.tif", scale=2.0)
    pr = _Warnings()
    map_building_use(str(kampala_rgb), str(tiny_use_checkpoint), poi_maps=str(coarse), use_class=str(uc),
                     window=256, overlap=32, device="cpu", progress=pr)
    assert uc.exists()
    assert any("POI_MAPS" in w and "not on the grid of the imagery" in w for w in pr.warnings), pr.warnings
    # on the grid: no such warning
    pr2 = _Warnings()
    map_building_use(str(kampala_rgb), str(tiny_use_checkpoint), use_class=str(tmp_path / "uc2.tif"),
                     window=256, overlap=32, device="cpu", progress=pr2,
                     poi_maps=gradient_poi_maps(tmp_path, kampala_rgb))
    assert not any("not on the grid" in w for w in pr2.warnings), pr2.warnings
    # 50 km away: covers nothing of the imagery
    far = _poi_like(tmp_path, kampala_rgb, "poi_far.tif", shift=50_000)
    _bad(tmp_path, kampala_rgb, tiny_use_checkpoint, "POI_MAPS.*covers none", poi_maps=str(far))


def test_mask_off_grid_is_announced(tmp_path, kampala_rgb, tiny_use_checkpoint, gradient_poi_maps):
    with rasterio.open(kampala_rgb) as src:
        t, h, w, c = src.transform, src.height, src.width, src.crs
    m = tmp_path / "mask_1m.tif"
    with rasterio.open(m, "w", driver="GTiff", width=w // 2, height=h // 2, count=1, dtype="uint8", crs=c,
                       transform=t @ Affine.scale(2)) as dst:
        dst.write(np.ones((1, h // 2, w // 2), np.uint8))
    pr = _Warnings()
    map_building_use(str(kampala_rgb), str(tiny_use_checkpoint), mask=str(m), use_class=str(tmp_path / "uc.tif"),
                     window=256, overlap=32, device="cpu", progress=pr,
                     poi_maps=gradient_poi_maps(tmp_path, kampala_rgb))
    assert any(w.startswith("MASK") and "not on the grid" in w for w in pr.warnings), pr.warnings


# ---------------------------------------------------------------- polygon write failure
def test_polygon_write_failure_is_clear_and_leaves_nothing(tmp_path, kampala_rgb, tiny_use_checkpoint, monkeypatch,
                                                           gradient_poi_maps):
    import pyogrio.raw
    from pyogrio.errors import DataSourceError

    from edifice.core.sliding_window import DiskFullError

    real = pyogrio.raw.write

    def fail(path, *a, **k):
        real(path, *a, **k)  # the GeoPackage exists, then the commit fails as on a full disk
        raise DataSourceError("Failed to commit transaction")

    pois = {"poi_maps": gradient_poi_maps(tmp_path, kampala_rgb)}
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(pyogrio.raw, "write", fail)
    with pytest.raises(DiskFullError, match=r"POLYGONS: writing the building polygons .* failed \(Failed to commit "
                                            r"transaction\); the disk is probably full.*Fix: free some space"):
        map_building_use(str(kampala_rgb), str(tiny_use_checkpoint), use_class=str(out / "uc.tif"),
                         footprint_probability=str(out / "fp.tif"), polygons=str(out / "b.gpkg"),
                         window=256, overlap=32, device="cpu", **pois)
    assert sorted(p.name for p in out.iterdir()) == []


# ---------------------------------------------------------------- band order and GSD checks
def _crop_with_descriptions(tmp_path, kampala_rgb, name, descriptions, size=256):
    """A ``size`` px crop of the Kampala sample whose bands carry ``descriptions`` (None: unset)."""
    with rasterio.open(kampala_rgb) as src:
        win = rasterio.windows.Window(928, 32, size, size)
        a = src.read(window=win)
        prof = dict(src.profile, width=size, height=size, transform=src.window_transform(win))
    assert (a != 0).all(axis=0).mean() > 0.5  # mostly valid, so windows are run
    path = tmp_path / name
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(a)
        for i, d in enumerate(descriptions or [], start=1):
            if d is not None:
                dst.set_band_description(i, d)
    return path


def test_band_order_warning_rules():
    from edifice.core.use.building_use_map import band_order_warning

    card = ["red", "green", "blue"]
    text = band_order_warning(["blue", "green", "red"], card)
    assert text and "blue, green, red" in text and "red, green, blue" in text
    assert band_order_warning(["Red", " green ", "BLUE"], card) is None           # same names, other case
    assert band_order_warning(["nir", "red", "green"], card)                      # other bands
    for generic in (["Band 1", "Band 2", "Band 3"], ["band_1", "band2", "3"], ["Layer 1", "Layer 2", "Layer 3"]):
        assert band_order_warning(generic, card) is None, generic
    assert band_order_warning(["blue", "", "red"], card) is None                  # not all set
    assert band_order_warning([None, None, None], card) is None
    assert band_order_warning(["blue", "green", "red"], ["band1", "band2", "band3"]) is None  # generic card
    assert band_order_warning(["B04", "B03", "B02"], ["B02", "B03", "B04"])       # Sentinel-2 names compared


def test_band_order_mismatch_is_warned_not_refused(tmp_path, kampala_rgb, tiny_use_checkpoint, gradient_poi_maps):
    swapped = _crop_with_descriptions(tmp_path, kampala_rgb, "bgr.tif", ["blue", "green", "red"])
    pr = _Warnings()
    out = tmp_path / "uc.tif"
    map_building_use(str(swapped), str(tiny_use_checkpoint), use_class=str(out), window=256, overlap=32,
                     device="cpu", progress=pr, poi_maps=gradient_poi_maps(tmp_path, swapped))
    assert out.exists()
    hits = [w for w in pr.warnings if "band descriptions" in w]
    assert len(hits) == 1 and "(blue, green, red)" in hits[0] and "(red, green, blue)" in hits[0], pr.warnings
    # matching names, no descriptions, generic ones: nothing said
    for name, desc in (("rgb.tif", ["Red", "Green", "Blue"]), ("none.tif", None),
                       ("generic.tif", ["Band 1", "Band 2", "Band 3"]), ("partial.tif", ["blue", None, "red"])):
        img = _crop_with_descriptions(tmp_path, kampala_rgb, name, desc)
        with rasterio.open(img) as ds:
            assert list(ds.descriptions) == [d if d else None for d in (desc or [None] * 3)]
        pr = _Warnings()
        map_building_use(str(img), str(tiny_use_checkpoint), use_class=str(tmp_path / f"uc_{name}"), window=256,
                         overlap=32, device="cpu", progress=pr, poi_maps=gradient_poi_maps(tmp_path, img))
        assert not any("band descriptions" in w for w in pr.warnings), (name, pr.warnings)


def _at_gsd(tmp_path, kampala_rgb, gsd, size=64):
    """A ``size`` px raster from the Kampala sample with ``gsd`` m pixels (same corner and CRS)."""
    with rasterio.open(kampala_rgb) as src:
        a = src.read(window=rasterio.windows.Window(928, 32, size, size))
        t = src.transform
        prof = dict(src.profile, width=size, height=size, transform=Affine(gsd, 0, t.c, 0, -gsd, t.f))
    path = tmp_path / f"gsd_{gsd:g}.tif"
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(a)
    return path


def test_gsd_far_from_the_card_is_refused(tmp_path, kampala_rgb, tiny_use_checkpoint, gradient_poi_maps):
    from edifice.core.use.building_use_map import imagery_grid
    from edifice.core.progress import Progress

    pois = {"poi_maps": gradient_poi_maps(tmp_path, kampala_rgb)}
    # the card says 0.5 m: 5 m pixels (10x) and 0.05 m pixels (1/10x) are refused, nothing written
    _bad(tmp_path, _at_gsd(tmp_path, kampala_rgb, 5.0), tiny_use_checkpoint,
         r"IMAGERY: has 5 m pixels but the model was trained at 0.5 m \(10x its pixel size\)", **pois)
    _bad(tmp_path, _at_gsd(tmp_path, kampala_rgb, 0.05), tiny_use_checkpoint,
         r"IMAGERY: has 0.05 m pixels but the model was trained at 0.5 m \(0.1x its pixel size\).*near 0.5 m", **pois)
    # just inside the 8x limit both ways: resampled to the card's GSD instead
    from edifice.models.checkpoint import load_checkpoint
    _, card = load_checkpoint(tiny_use_checkpoint)
    for gsd in (3.9, 0.0635):
        grid, resampled = imagery_grid(str(_at_gsd(tmp_path, kampala_rgb, gsd)), card, Progress())
        assert resampled and np.isclose(grid.res[0], 0.5, rtol=0.02), (gsd, grid.res)


def test_argmax_of_three_is_numpys_argmax_with_ties_zeros_and_nan():
    from edifice.core.use.building_use_map import argmax_of_three

    rng = np.random.default_rng(2)
    use = rng.integers(0, 3, (3, 40, 50)).astype(np.float32) / 2  # many ties, two- and three-way
    use[:, 0, :3] = [[0.0, -0.0, 0.5], [-0.0, 0.0, 0.5], [0.0, 0.0, -0.5]]  # signed zeros compare equal
    got = argmax_of_three(use)
    assert got.dtype == np.uint8 and np.array_equal(got, np.argmax(use, axis=0))
    assert set(np.unique(got)) == {0, 1, 2}
    use[1, 5, 5] = use[2, 7, 7] = np.nan  # argmax takes the first NaN
    assert np.array_equal(argmax_of_three(use), np.argmax(use, axis=0))


def test_read_cache_holds_a_row_of_windows_within_bounds(tmp_path):
    """The run's GDAL block cache: twice one row of windows' decoded input bytes (3 uint8 + 3 float32 bands:
    15 B/px), never below the default bound nor above READ_CACHE_MAX_BYTES."""
    import rasterio
    from affine import Affine

    from edifice.core.grid import Grid
    from edifice.core.raster_io import GDAL_CACHE_BYTES
    from edifice.core.sliding_window import WindowLayout
    from edifice.core.use.building_use_map import READ_CACHE_MAX_BYTES, UseJob

    paths = {}
    for name, count, dtype in (("img", 3, "uint8"), ("poi", 3, "float32")):
        paths[name] = tmp_path / f"{name}.tif"
        with rasterio.open(paths[name], "w", driver="GTiff", width=8, height=8, count=count, dtype=dtype) as ds:
            ds.write(np.zeros((count, 8, 8), dtype))

    def cache(width, window, poi=True):
        grid = Grid(Affine(0.5, 0, 0, 0, -0.5, 0), width, 64, "EPSG:32636")
        job = UseJob(str(paths["img"]), grid, WindowLayout(window, window // 8), (1,) * 6, (0,) * 6,
                     str(paths["poi"]) if poi else None, None, True, 0.5, {})
        return job.read_cache_bytes()

    assert cache(4096, 1024) == 2 * 1024 * 4096 * 15
    assert cache(4096, 1024, poi=False) == GDAL_CACHE_BYTES  # 24 MiB needed: the default bound
    assert cache(100_000, 1024) == READ_CACHE_MAX_BYTES
