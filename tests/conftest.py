"""Shared fixtures. Unit tests never import qgis; tests marked qgis/e2e use real QGIS."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


@pytest.fixture
def kampala_rgb(tmp_path) -> Path:
    """A copy of the bundled Kampala 0.5 m RGB sample (EPSG:32636, uint8, nodata 0)."""
    dst = tmp_path / "kampala_rgb_50cm.tif"
    shutil.copy(SAMPLES / "kampala" / "kampala_rgb_50cm.tif", dst)
    return dst


@pytest.fixture
def helsinki_pbf(tmp_path) -> Path:
    """A copy of the bundled Helsinki OSM extract (read its 'points' layer)."""
    dst = tmp_path / "Helsinki.osm.pbf"
    shutil.copy(SAMPLES / "helsinki" / "Helsinki.osm.pbf", dst)
    return dst


# --- THU height/footprint sample (samples/thu) --------------------------------------------------------
#: Extent (degrees) and padding the THU tests and the demo use; inside the bundled crops.
THU_EXTENT = (116.305, 39.987, 116.335, 40.017)
THU_PADDING = 0.005


@pytest.fixture(scope="session")
def thu_dir(tmp_path_factory) -> Path:
    """A copy of samples/thu (real S-1 and SRTM crops, synthetic S-2) in a temporary folder."""
    dst = tmp_path_factory.mktemp("thu")
    for f in ("thu_s1_2020.tif", "thu_s2_synthetic.tif", "thu_srtm.tif"):
        shutil.copy(SAMPLES / "thu" / f, dst / f)
    return dst


def _random_checkpoint_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_random_shafts_checkpoint",
                                                  ROOT / "scripts" / "make_random_shafts_checkpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def thu_checkpoint(thu_dir, tmp_path_factory) -> Path:
    """SHAFTS 100 m multi-task checkpoint with RANDOM weights (seed 0), output layers rescaled on the THU
    sample so the outputs have contrast (scripts/make_random_shafts_checkpoint.py). Not a trained model."""
    path = tmp_path_factory.mktemp("ckpt") / "random_100m.pth"
    _random_checkpoint_module().make_random_checkpoint(
        path, 100, 0, (thu_dir / "thu_s1_2020.tif", thu_dir / "thu_s2_synthetic.tif", thu_dir / "thu_srtm.tif",
                       THU_EXTENT), THU_PADDING)
    return path


@pytest.fixture(scope="session")
def thu_extent() -> tuple[tuple[float, float, float, float], float]:
    """(extent xmin, ymin, xmax, ymax in degrees, padding in degrees) used with the THU sample."""
    return THU_EXTENT, THU_PADDING
def make_tiny_use_checkpoint(path: Path, variant: str = "imagery_poi_multitask", window: int = 256,
                             seed: int = 0) -> Path:
    """A random-weights building-use checkpoint (tiny ResNet-18 U-Net) whose card says
    RGB uint8 scaled by 1/255 (+ 3 POI bands for POI variants), 0.5 m, ``window`` px."""
    import torch

    from edifice.models.checkpoint import save_checkpoint
    from edifice.models.unet import ARCHITECTURE, UNetResNet, poi_band_count

    torch.manual_seed(seed)
    npoi = poi_band_count(variant)
    params = {"encoder": "resnet18", "in_channels": 3 + npoi, "variant": variant, "base_width": 4}
    net = UNetResNet(**params).eval()
    with torch.no_grad():
        # calibrate BatchNorm on smooth random images (random BN statistics give a constant
        # output), then centre the logits so that buildings, background and all classes occur
        g = torch.Generator().manual_seed(seed)
        x = torch.nn.functional.interpolate(torch.rand(4, 3 + npoi, 16, 16, generator=g), size=(128, 128),
                                            mode="bilinear", align_corners=False)
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.momentum = None
        net.train()
        net(x)
        net.eval()
        out = net(x)
        for key, head in (("use", net.use_head), ("footprint", net.footprint_head)):
            if head is not None:
                med = out[key].transpose(0, 1).flatten(1).median(dim=1).values
                head.out.bias.sub_(med)
    bands = [{"name": n, "scale": 1 / 255, "offset": 0.0} for n in ("red", "green", "blue")]
    bands += [{"name": f"p_{c}", "scale": 1.0, "offset": 0.0} for c in ("residential", "commercial", "industrial")][:npoi]
    classes = [{"index": 0, "name": "background", "color": "#000000"},
               {"index": 1, "name": "residential", "color": "#e8c547"},
               {"index": 2, "name": "commercial", "color": "#d7263d"},
               {"index": 3, "name": "industrial", "color": "#6a4c93"}]
    card = {"task": "building_use", "architecture": {"name": ARCHITECTURE, "params": params}, "bands": bands,
            "gsd_m": 0.5, "window": window, "classes": classes, "outputs": {}, "training": {"note": "random weights"}}
    save_checkpoint(path, net.state_dict(), card)
    return path


@pytest.fixture
def tiny_use_checkpoint(tmp_path) -> Path:
    """A random-weights imagery_poi_multitask checkpoint (see :func:`make_tiny_use_checkpoint`)."""
    return make_tiny_use_checkpoint(tmp_path / "tiny_use.pt")


def write_gradient_poi_maps(folder: Path, imagery) -> str:
    """POI maps on ``imagery``'s grid with known values: R = x / max x, C = y / max y, I = 0.5 (float32,
    nodata -1), written to ``folder``/poi.tif."""
    import numpy as np
    import rasterio

    with rasterio.open(imagery) as src:
        prof = dict(driver="GTiff", width=src.width, height=src.height, count=3, dtype="float32", crs=src.crs,
                    transform=src.transform, nodata=-1.0)
        yy, xx = np.mgrid[0:src.height, 0:src.width]
    p = np.stack([xx / xx.max(), yy / yy.max(), 0.5 * np.ones_like(xx, float)]).astype(np.float32)
    path = Path(folder) / "poi.tif"
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(p)
    return str(path)


@pytest.fixture
def gradient_poi_maps():
    """:func:`write_gradient_poi_maps`."""
    return write_gradient_poi_maps


@pytest.fixture
def kampala_pois(tmp_path) -> Path:
    """A few OSM-style POIs (field other_tags) inside the Kampala sample, EPSG:32636."""
    import pyogrio.raw
    import shapely

    pts = [(454400, 38800, '"shop"=>"supermarket"'), (454700, 38600, '"amenity"=>"school"'),
           (454900, 38520, '"craft"=>"carpenter"'), (454500, 38700, '"building"=>"house"'),
           (454950, 38800, '"landuse"=>"industrial"')]
    dst = tmp_path / "kampala_pois.gpkg"
    geoms = shapely.to_wkb(shapely.points([(x, y) for x, y, _ in pts]))
    pyogrio.raw.write(str(dst), geoms, [np.array([t for *_, t in pts], dtype=object)], ["other_tags"],
                      driver="GPKG", geometry_type="Point", crs="EPSG:32636")
    return dst


@pytest.fixture
def tiny_use_checkpoint_1024(tmp_path) -> Path:
    """As :func:`tiny_use_checkpoint` with the seed's 1024 px window in its card."""
    return make_tiny_use_checkpoint(tmp_path / "tiny_use_1024.pt", window=1024)


# --- stand-in HTTP services (tests/servers/standin.py): real processes on 127.0.0.1 ---------------------
def _standin_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("edifice_tests_standin", ROOT / "tests" / "servers" / "standin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def standin(tmp_path_factory):
    """Factory: ``standin(module_path, *args, env=None, tls_dir=None)`` starts a stand-in service (a
    subprocess on 127.0.0.1; HTTPS with ``tls_dir``'s certificate) and returns its :class:`StandIn`
    (``.url``, ``.set_faults``, ``.requests()``, ``.kill()``); every one started is stopped at teardown."""
    started = []
    start = _standin_module().start_standin

    def factory(module_path, *args, env=None, tls_dir=None):
        state = tmp_path_factory.mktemp("standin")
        server = start(module_path, state, list(args), env=env, tls_dir=tls_dir)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def self_signed_tls(tmp_path_factory):
    """A folder with ``cert.pem`` / ``key.pem`` of a self-signed certificate for 127.0.0.1."""
    return _standin_module().make_self_signed_certificate(tmp_path_factory.mktemp("tls"))


# --- Overpass stand-in (tests/servers/overpass_standin.py) over the Helsinki extract ---------------------------
#: The Helsinki sample's extent (lon/lat) and a 600 m square inside it in EPSG:3067 (ETRS-TM35FIN).
HELSINKI_LONLAT = (24.935, 60.164, 24.953, 60.179)
HELSINKI_3067 = (385600.0, 6671400.0, 386200.0, 6672000.0)


def _test_module(path: Path):
    import importlib.util
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def overpass_db(tmp_path_factory) -> Path:
    """A recorded Overpass database (JSON) of every element of samples/helsinki/Helsinki.osm.pbf."""
    mod = _test_module(ROOT / "tests" / "servers" / "overpass_extract.py")
    return Path(mod.write_extract(SAMPLES / "helsinki" / "Helsinki.osm.pbf",
                                  tmp_path_factory.mktemp("overpass") / "helsinki_overpass.json"))


@pytest.fixture
def helsinki_3067() -> tuple:
    """A 600 m square (EPSG:3067) inside the Helsinki sample's extent."""
    return HELSINKI_3067


@pytest.fixture
def overpass(standin, overpass_db):
    """The Overpass stand-in serving the Helsinki extract (``.url + '/api/interpreter'``)."""
    return standin(ROOT / "tests" / "servers" / "overpass_standin.py", overpass_db)


@pytest.fixture
def open_data_town(standin, tmp_path_factory):
    """A synthetic town of known building use (tests/unit/_use_scene.py, 256 m, EPSG:32636 near Kampala)
    served as open data: its buildings and POIs by the Overpass stand-in (every 5th building tagged
    building=yes, i.e. unlabelled) and its 1 m imagery by the tile server (XYZ). Returns a namespace with
    ``overpass_url``, ``xyz_url``, ``extent`` (EPSG:32636), ``crs``, ``scene`` (paths and truth)."""
    from types import SimpleNamespace

    folder = tmp_path_factory.mktemp("town")
    scene_mod = _test_module(ROOT / "tests" / "unit" / "_use_scene.py")
    scene = scene_mod.make_scene(folder, size=256, seed=3)
    extract = _test_module(ROOT / "tests" / "servers" / "overpass_extract.py")
    db = extract.write_elements(extract.elements_from_layers(scene["buildings"], scene["pois"], unlabelled_every=5),
                                "2026-01-01T00:00:00Z", str(folder / "town_overpass.json"))
    overpass = standin(ROOT / "tests" / "servers" / "overpass_standin.py", db)
    tiles = standin(ROOT / "tests" / "servers" / "tile_server.py", "--source", scene["imagery"], "--max-zoom", "19")
    x0, y0 = scene_mod.X0, scene_mod.Y0
    return SimpleNamespace(overpass_url=overpass.url + "/api/interpreter", xyz_url=tiles.url + "/xyz/{z}/{x}/{y}.png",
                           extent=(x0, y0 - 256, x0 + 256, y0), crs="EPSG:32636", scene=scene,
                           overpass=overpass, tiles=tiles)


# --- Earth Engine stand-in (tests/servers/ee_standin.py) ---------------------------------------------------
EE_STANDIN = ROOT / "tests" / "servers" / "ee_standin.py"
#: Project the Earth Engine stand-in treats as registered.
EE_PROJECT = "edifice-test"


class EarthEngineStandIn:
    """A running Earth Engine stand-in and a fake service-account key for it: ``url``, ``server``
    (the :class:`StandIn`), ``key_path`` (JSON key file whose token_uri is the stand-in), ``key_info``."""

    def __init__(self, server, key_path: Path, key_info: dict):
        self.server, self.key_path, self.key_info = server, key_path, key_info
        self.url = server.url
        self.state_dir = server.state_dir

    def wrong_key(self) -> str:
        """JSON of a key for the same account with another private key (the stand-in refuses its JWTs)."""
        import json
        import tempfile
        info, _ = fake_service_account(Path(tempfile.mkdtemp(dir=self.key_path.parent)))
        return json.dumps({**info, "client_email": self.key_info["client_email"],
                           "token_uri": self.key_info["token_uri"]})

    def expire_tokens(self) -> None:
        import urllib.request
        urllib.request.urlopen(urllib.request.Request(self.url + "/test/expire-tokens", data=b""), timeout=10).read()

    def computepixels(self) -> list[dict]:
        """computePixels requests served so far, each with its parsed ``grid`` (None when faulted early)."""
        import json
        out = []
        for r in self.server.requests():
            if r["path"].endswith("image:computePixels"):
                body = json.loads(r["body"]) if r.get("body") else {}
                out.append({**r, "grid": body.get("grid")})
        return out


def fake_service_account(folder: Path):
    """(key dict without token_uri, public PEM path) of a locally generated service-account key."""
    return _test_module(EE_STANDIN).fake_service_account(folder, EE_PROJECT)


@pytest.fixture
def ee_standin(standin, tmp_path_factory):
    """Factory: ``ee_standin(*extra_args)`` starts the Earth Engine stand-in (extra args e.g.
    ``--max-request-bytes 100000``) and writes a service-account key for it."""
    import json

    def factory(*extra):
        folder = tmp_path_factory.mktemp("ee_key")
        info, pub = fake_service_account(folder)
        server = standin(EE_STANDIN, "--public-key", pub, "--client-email", info["client_email"], *extra)
        info["token_uri"] = server.url + "/token"
        key_path = folder / "service_account.json"
        key_path.write_text(json.dumps(info))
        return EarthEngineStandIn(server, key_path, info)

    return factory
@pytest.fixture
def kampala_ndsm(tmp_path, kampala_rgb):
    """(path, heights, geometries): a 0.5 m nDSM on the Kampala grid (float32, nodata -9999) where
    building i of samples/kampala/buildings_osm.geojson (file order, EPSG:32636 geometries) stands
    3 + (i % 7) * 2 m high and the ground is 0 m."""
    import pyogrio.raw
    import rasterio
    import shapely
    from pyproj import Transformer
    from rasterio import features

    with rasterio.open(kampala_rgb) as src:
        prof, shape, t = src.profile, src.shape, src.transform
    _, _, wkb, _ = pyogrio.raw.read(str(SAMPLES / "kampala" / "buildings_osm.geojson"))
    tr = Transformer.from_crs("EPSG:4326", "EPSG:32636", always_xy=True)
    geoms = shapely.transform(shapely.from_wkb(wkb), lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    truth = 3.0 + (np.arange(len(geoms)) % 7) * 2.0
    h = features.rasterize(list(zip(geoms, truth)), out_shape=shape, transform=t, fill=0.0, dtype="float32")
    prof.update(count=1, dtype="float32", nodata=-9999.0)
    path = tmp_path / "ndsm.tif"
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(h[None])
    return path, truth, geoms


# --- STAC stand-in (tests/servers/stac_standin.py) over the THU extent ----------------------------------------
STAC_STANDIN = ROOT / "tests" / "servers" / "stac_standin.py"


@pytest.fixture(scope="session")
def thu_stac_catalog(tmp_path_factory) -> Path:
    """A STAC catalogue (items.json + COGs) over THU_EXTENT plus the 0.03 deg padding of the 100 m model
    and a margin, made from the THU samples (tests/servers/stac_thu_catalog.py: known composites)."""
    pad = 0.04
    area = (THU_EXTENT[0] - pad, THU_EXTENT[1] - pad, THU_EXTENT[2] + pad, THU_EXTENT[3] + pad)
    return _test_module(ROOT / "tests" / "servers" / "stac_thu_catalog.py").build(
        tmp_path_factory.mktemp("thu_stac"), area)


@pytest.fixture
def thu_stac(standin, thu_stac_catalog):
    """The STAC stand-in serving :func:`thu_stac_catalog`, asset reads signed (``--sas``)."""
    return standin(STAC_STANDIN, "--catalog", thu_stac_catalog, "--sas")
