"""From an extent to a building-use map with open data (``edifice map-city``; the same chain as
``examples/open_data_building_use.model3``):

imagery (tile / WMTS / WMS service) -> OpenStreetMap POIs and buildings (Overpass) -> POI probability
maps on the imagery grid -> training dataset from the buildings OpenStreetMap labels -> training ->
building-use map over the extent -> every OSM footprint (labelled or not) gets its use -> evaluation
on the dataset's held-back test buildings, with an HTML report.

Each step calls the core function of its tool and writes its output into ``output_dir`` (atomically,
as the tool does); a cancelled run keeps the steps it finished.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..progress import Progress, ensure
from .overpass import DEFAULT_ENDPOINT, DEFAULT_MAX_TILE_KM2

#: (step, end of its share of the progress bar)
STEPS = (("imagery", 0.15), ("osm", 0.2), ("poi_maps", 0.25), ("dataset", 0.35), ("training", 0.8),
         ("mapping", 0.92), ("footprints", 0.96), ("evaluation", 1.0))
FILES = {"imagery": "imagery.tif", "osm": "osm.gpkg", "poi_maps": "poi_maps.tif", "dataset": "dataset",
         "checkpoint": "building_use.pt", "use_class": "use_class.tif", "use_probabilities": "use_probabilities.tif",
         "buildings": "buildings_use.gpkg", "report_html": "evaluation.html", "report_json": "evaluation.json"}


@dataclass
class MapCityRequest:
    """The chain's settings. ``extent`` (xmin, ymin, xmax, ymax) in ``extent_crs``; ``imagery`` an
    :class:`~core.acquire.imagery_sources.ImagerySource`; ``gsd_m`` the imagery's pixel size (m);
    ``poi_max_distances`` d_max (m) for R, C, I; ``chip_size`` (px) and ``split_tile_m`` (m, None = 4
    chips) of the dataset; training ``variant``/``encoder``/``base_width``/``epochs``/``batch_size``."""

    extent: tuple
    extent_crs: str
    output_dir: str
    imagery: object
    overpass_endpoint: str = DEFAULT_ENDPOINT
    gsd_m: float = 0.5
    max_tile_km2: float = DEFAULT_MAX_TILE_KM2
    poi_max_distances: tuple = (500.0, 500.0, 1500.0)
    chip_size: int = 256
    split_tile_m: float | None = None
    seed: int = 0
    variant: str = "imagery_poi_multitask"
    encoder: str = "resnet18"
    base_width: int = 64
    epochs: int = 20
    batch_size: int = 16
    device: str = "auto"
    cache_dir: str | None = None
    use_cache: bool = True
    paths: dict = field(default_factory=dict)

    def path(self, key: str) -> str:
        return str(Path(self.output_dir) / FILES[key])


def map_city(request: MapCityRequest, progress: Progress | None = None) -> dict:
    """Run the chain; returns the output paths and each step's summary."""
    progress = ensure(progress)
    out = Path(request.output_dir)
    if out.exists() and any(out.iterdir()):
        raise InputError("OUTPUT_FOLDER", f"'{out}' exists and is not empty.", "choose a new or empty folder.")
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"outputs": {k: request.path(k) for k in FILES}}
    start = 0.0
    for step, end in STEPS:
        progress.info(f"map-city: {step} …")
        results[step] = _RUNNERS[step](request, results, progress.span(start, end))
        progress.check_cancelled()
        start = end
    return results


def _imagery(r: MapCityRequest, results: dict, progress: Progress) -> dict:
    from .imagery import download_imagery

    return download_imagery(r.imagery, r.extent, r.extent_crs, r.path("imagery"), gsd_m=r.gsd_m,
                            cache=(r.cache_dir or True) if r.use_cache else False, progress=progress)


def _osm(r: MapCityRequest, results: dict, progress: Progress) -> dict:
    from ..raster_io import open_raster
    from .osm import OsmRequest, download_osm

    with open_raster(r.path("imagery"), "IMAGERY") as ds:
        crs = ds.crs.to_wkt()
    return download_osm(OsmRequest(r.extent, r.extent_crs, {"pois": r.path("osm"), "buildings": r.path("osm")},
                                   endpoint=r.overpass_endpoint, output_crs=crs, max_tile_km2=r.max_tile_km2,
                                   cache_dir=r.cache_dir, use_cache=r.use_cache), progress)


def _poi_maps(r: MapCityRequest, results: dict, progress: Progress) -> dict:
    from ..use.poi_probability import poi_probability, reference_grid
    from ..use.poi_sources import classify_pois, load_poi_mapping, read_point_file

    if results["osm"]["pois"]["total"] == 0:
        raise InputError("EXTENT", "OpenStreetMap has no POI in the extent.", "choose a larger or busier extent.")
    xs, ys, recs, crs = read_point_file(r.path("osm"), "pois", "other_tags")
    classified = classify_pois(xs, ys, recs, "other_tags", load_poi_mapping("osm"), crs)
    progress.info(classified.summary())
    return poi_probability(classified.pois, reference_grid(r.path("imagery")), r.path("poi_maps"),
                           list(r.poi_max_distances), r.path("imagery"), progress=progress)


def _dataset(r: MapCityRequest, results: dict, progress: Progress) -> dict:
    from ..use.training_dataset import create_training_dataset

    m = create_training_dataset(r.path("imagery"), r.path("osm"), r.path("dataset"), "building",
                                use_preset="osm_building", buildings_layer="buildings",
                                poi_raster_path=r.path("poi_maps"), chip_size=r.chip_size,
                                split_tile_m=r.split_tile_m, seed=r.seed, progress=progress)
    results["outputs"]["test_buildings"] = str(Path(r.path("dataset")) / m["test_buildings"])
    return {s: {k: v for k, v in m["split"]["subsets"][s].items() if k != "pixels"} for s in m["split"]["subsets"]}


def _training(r: MapCityRequest, results: dict, progress: Progress) -> dict:
    from ..use.training import train_building_use

    t = train_building_use(r.path("dataset"), r.path("checkpoint"), variant=r.variant, encoder=r.encoder,
                           base_width=r.base_width, epochs=r.epochs, batch_size=r.batch_size, patience=r.epochs,
                           device=r.device, seed=r.seed, progress=progress)
    return {k: t[k] for k in ("device", "epochs_run", "best_epoch", "best_val_loss")}


def _mapping(r: MapCityRequest, results: dict, progress: Progress) -> dict:
    from ..use.building_use_map import map_building_use

    s = map_building_use(r.path("imagery"), r.path("checkpoint"), poi_maps=r.path("poi_maps"),
                         use_class=r.path("use_class"), use_probabilities=r.path("use_probabilities"),
                         device=r.device, resume=False, progress=progress)
    return {k: v for k, v in s.items() if isinstance(v, (int, float, str))}


def _footprints(r: MapCityRequest, results: dict, progress: Progress) -> dict:
    from ..use.building_use_map import assign_building_use

    return assign_building_use(r.path("osm"), r.path("use_probabilities"), r.path("buildings"), layer="buildings",
                               progress=progress)


def _evaluation(r: MapCityRequest, results: dict, progress: Progress) -> dict:
    from ..evaluation.runs import evaluate_classification, summary, summary_lines

    test = results["dataset"]["test"]
    if sum(test[c] for c in ("residential", "commercial", "industrial")) == 0:
        progress.warning("The test subset holds no building of known use: no evaluation.")
        return {}
    res = evaluate_classification("building", results["outputs"]["test_buildings"], r.path("buildings"),
                                  "use", "use_name", json_path=r.path("report_json"), html_path=r.path("report_html"),
                                  title="Building use on the held-back OpenStreetMap buildings (test split)",
                                  progress=progress)
    for line in summary_lines(res):
        progress.info(f"Evaluation (test split): {line}")
    return summary(res)


_RUNNERS = {"imagery": _imagery, "osm": _osm, "poi_maps": _poi_maps, "dataset": _dataset, "training": _training,
            "mapping": _mapping, "footprints": _footprints, "evaluation": _evaluation}
