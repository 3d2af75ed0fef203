"""edifice:streetviewpoints, edifice:buildingsamples and edifice:classifybuildingfunction — building
function by large multimodal models (adapters over core.buildingsense)."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingOutputFile,
                       QgsProcessingOutputNumber, QgsProcessingParameterAuthConfig,
                       QgsProcessingParameterBoolean, QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterFile,
                       QgsProcessingParameterFolderDestination, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString,
                       QgsProcessingParameterVectorDestination)

from .base import EdificeAlgorithm, field_parameter
from .evaluate_classification_alg import taxonomy_names

Number = QgsProcessingParameterNumber
GROUP, GROUP_ID = "Building function (multimodal models)", "buildingfunction"
#: COMBINATION options in the seed's order (enum indices are part of the qgis_process interface).
COMBINATION_OPTIONS = [("T: text", "T"), ("R: remote sensing images", "R"), ("S: street view", "S"),
                       ("RT: remote sensing + text", "RT"), ("ST: street view + text", "ST"),
                       ("RS: remote sensing + street view", "RS"),
                       ("RST: remote sensing + street view + text", "RST")]


def _advanced(alg, params) -> None:
    for p in params:
        p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        alg.addParameter(p)


def _gpkg(path: str, name: str) -> str:
    if not path.lower().endswith(".gpkg"):
        raise QgsProcessingException(f"{name}: written as GeoPackage. Fix: give a .gpkg file name.")
    return path


def _secret(alg, parameters, name: str, env_var: str, context) -> str | None:
    """The key of the authentication configuration ``name``, else of the environment variable ``env_var``."""
    from ..core.acquire.credentials import secret_from_env_or_file

    authcfg = alg.parameterAsString(parameters, name, context)
    return alg.secret_from_authcfg(authcfg, name) if authcfg else secret_from_env_or_file(env_var)


def _text(alg, parameters, name, context) -> str | None:
    return (alg.parameterAsString(parameters, name, context) or "").strip() or None


class StreetViewPointsAlgorithm(EdificeAlgorithm):
    BUILDINGS, ROADS, ID_FIELD, HEIGHT_FIELD, HEIGHT_RASTER = "BUILDINGS", "ROADS", "ID_FIELD", "HEIGHT_FIELD", \
        "HEIGHT_RASTER"
    MAX_DISTANCE, DEFAULT_HEIGHT, EXCLUDED_HIGHWAYS, OUTPUT = "MAX_DISTANCE", "DEFAULT_HEIGHT", "EXCLUDED_HIGHWAYS", \
        "OUTPUT"
    GROUP, GROUP_ID = GROUP, GROUP_ID
    HELP = ("Street-view sampling points (BuildingSense, Su et al. 2026, §3.1.2): for each building, the nearest "
            "projection of its centroid on the road network, with the camera heading (degrees from true north, "
            "towards the building's centroid), pitch = arctan(height / distance) in degrees, distance_m, height_m, "
            "building_id and road_fid. Sidewalks, footways, cycleways, paths, steps ... are left out by their OSM "
            "tags (EXCLUDED_HIGHWAYS, and footway=sidewalk/crossing or cycleway=lane/track in other_tags); a line "
            "layer without a 'highway' field is used whole. Distances and headings are geodesic in a geographic "
            "CRS; in a projected CRS planar, with the heading corrected for the meridian convergence. Heights from "
            "HEIGHT_FIELD or HEIGHT_RASTER (sampled at the centroid), else DEFAULT_HEIGHT. Buildings farther than "
            "MAX_DISTANCE metres from any street get no point (counted in the log).")

    def name(self):
        return "streetviewpoints"

    def displayName(self):  # noqa: N802
        return "Street-view sampling points"

    def initAlgorithm(self, config=None):  # noqa: N802
        from ..core.buildingsense.streetview import EXCLUDED_HIGHWAYS

        self.addParameter(QgsProcessingParameterFeatureSource(self.BUILDINGS, "Building footprints",
                                                              [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterFeatureSource(self.ROADS, "Road network (lines)",
                                                              [QgsProcessing.TypeVectorLine]))
        self.addParameter(field_parameter(self.ID_FIELD, "Building id field (empty = feature number)", self.BUILDINGS,
                                          optional=True))
        self.addParameter(field_parameter(self.HEIGHT_FIELD, "Building height field (m)", self.BUILDINGS, optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(self.HEIGHT_RASTER, "Building height raster (m)",
                                                            optional=True))
        self.addParameter(Number(self.MAX_DISTANCE, "Farthest street (m)", Number.Double, 100.0, minValue=0.1))
        self.addParameter(Number(self.DEFAULT_HEIGHT, "Height where none is known (m)", Number.Double, 10.0,
                                 minValue=0.0))
        _advanced(self, [QgsProcessingParameterString(self.EXCLUDED_HIGHWAYS, "OSM highway values left out",
                                                      defaultValue=",".join(EXCLUDED_HIGHWAYS))])
        self.addParameter(QgsProcessingParameterVectorDestination(self.OUTPUT, "Street-view points",
                                                                  QgsProcessing.TypeVectorPoint))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.buildingsense.streetview import StreetViewSettings, street_view_points

        bpath, blayer = self.vector_source(parameters, self.BUILDINGS, context, feedback)
        rpath, rlayer = self.vector_source(parameters, self.ROADS, context, feedback)
        hr = self.parameterAsRasterLayer(parameters, self.HEIGHT_RASTER, context)
        out = _gpkg(self.parameterAsOutputLayer(parameters, self.OUTPUT, context), self.OUTPUT)
        excluded = tuple(x.strip() for x in (self.parameterAsString(parameters, self.EXCLUDED_HIGHWAYS, context)
                                             or "").split(",") if x.strip())
        s = StreetViewSettings(self.parameterAsDouble(parameters, self.MAX_DISTANCE, context),
                               self.parameterAsDouble(parameters, self.DEFAULT_HEIGHT, context), excluded)
        self.run_core(street_view_points, bpath, rpath, out, buildings_layer=blayer, roads_layer=rlayer,
                      id_field=self.field_name(parameters, self.ID_FIELD, context) or None,
                      height_field=self.field_name(parameters, self.HEIGHT_FIELD, context) or None,
                      height_raster=self.raster_path(hr, self.HEIGHT_RASTER) if hr else None,
                      settings=s, progress=self.progress(feedback))
        self.style_output(context, out, "street_view_points.qml")
        return {self.OUTPUT: out}


class BuildingSamplesAlgorithm(EdificeAlgorithm):
    BUILDINGS, ID_FIELD, IMAGERY, STREET_VIEW_FOLDER, STREET_VIEW_POINTS = (
        "BUILDINGS", "ID_FIELD", "IMAGERY", "STREET_VIEW_FOLDER", "STREET_VIEW_POINTS")
    POIS, POI_NAME_FIELD, POI_CATEGORY_FIELD, ATTRIBUTES = "POIS", "POI_NAME_FIELD", "POI_CATEGORY_FIELD", "ATTRIBUTES"
    BUFFER, CHIP_MAX_PX, IMAGE_FORMAT, POI_NEAR, MAX_POIS = "BUFFER", "CHIP_MAX_PX", "IMAGE_FORMAT", "POI_NEAR", \
        "MAX_POIS"
    STREET_VIEW_URL, STREET_VIEW_AUTHCFG, STREET_VIEW_SIZE, STREET_VIEW_FOV = (
        "STREET_VIEW_URL", "STREET_VIEW_AUTHCFG", "STREET_VIEW_SIZE", "STREET_VIEW_FOV")
    OUTPUT_FOLDER, MANIFEST, SAMPLES = "OUTPUT_FOLDER", "MANIFEST", "SAMPLES"
    GROUP, GROUP_ID = GROUP, GROUP_ID
    FORMATS = ["png", "jpeg"]
    HELP = ("Per-building multimodal samples (BuildingSense §3.1): a rooftop chip (the imagery masked to the "
            "footprint) and a buffer chip (BUFFER metres around it, 60.96 m = 200 ft as the seed) from IMAGERY; "
            "street-view images from STREET_VIEW_FOLDER named by building id (<id>.jpg, <id>_2.jpg or <id>/*.jpg); "
            "heading/pitch from STREET_VIEW_POINTS (the output of Street-view sampling points); the POIs inside "
            "the footprint and within POI_NEAR metres with their names and categories (OSM other_tags are "
            "turned into key=value categories); the ATTRIBUTES fields (e.g. height,year,address) and the "
            "location. Writes one sub-folder per building and manifest.json into OUTPUT_FOLDER (which must be new, "
            "empty or an earlier samples folder) — the input of Classify building function. With STREET_VIEW_URL "
            "(a URL template with {lat} {lon} {heading} {pitch} {fov} {size}, e.g. Google's Street View Static "
            "API), the image of each sampling point without a folder image is fetched; its key comes from "
            "STREET_VIEW_AUTHCFG, else $EDIFICE_STREETVIEW_API_KEY, and is sent as the 'key' parameter.")

    def name(self):
        return "buildingsamples"

    def displayName(self):  # noqa: N802
        return "Building samples for multimodal classification"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFeatureSource(self.BUILDINGS, "Building footprints",
                                                              [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(field_parameter(self.ID_FIELD, "Building id field (empty = feature number)", self.BUILDINGS,
                                          optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(self.IMAGERY, "Imagery (rooftop and buffer chips)",
                                                            optional=True))
        self.addParameter(QgsProcessingParameterFile(self.STREET_VIEW_FOLDER, "Street-view images folder",
                                                     behavior=QgsProcessingParameterFile.Folder, optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.STREET_VIEW_POINTS, "Street-view points",
                                                              [QgsProcessing.TypeVectorPoint], optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.POIS, "POI points", [QgsProcessing.TypeVectorPoint],
                                                              optional=True))
        self.addParameter(field_parameter(self.POI_NAME_FIELD, "POI name field", self.POIS, "name"))
        self.addParameter(field_parameter(self.POI_CATEGORY_FIELD, "POI category field", self.POIS, "other_tags"))
        self.addParameter(field_parameter(self.ATTRIBUTES, "Building fields for the text (e.g. height, year, address)",
                                          self.BUILDINGS, optional=True, multiple=True))
        self.addParameter(Number(self.BUFFER, "Buffer zone (m)", Number.Double, 60.96, minValue=0.1))
        _advanced(self, [
            Number(self.CHIP_MAX_PX, "Longest chip side (px)", Number.Integer, 512, minValue=16),
            QgsProcessingParameterEnum(self.IMAGE_FORMAT, "Chip format", options=self.FORMATS, defaultValue=0),
            Number(self.POI_NEAR, "POIs near the building: within (m)", Number.Double, 30.0, minValue=0.0),
            Number(self.MAX_POIS, "Most near POIs listed", Number.Integer, 20, minValue=0),
            QgsProcessingParameterString(self.STREET_VIEW_URL, "Street-view API URL template (fetch images)",
                                         optional=True),
            QgsProcessingParameterAuthConfig(self.STREET_VIEW_AUTHCFG, "Street-view API key", optional=True),
            QgsProcessingParameterString(self.STREET_VIEW_SIZE, "Street-view image size", defaultValue="640x640"),
            Number(self.STREET_VIEW_FOV, "Street-view field of view (°)", Number.Double, 90.0, minValue=1.0,
                   maxValue=120.0)])
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, "Samples folder"))
        self.addOutput(QgsProcessingOutputFile(self.MANIFEST, "Samples manifest (JSON)"))
        self.addOutput(QgsProcessingOutputNumber(self.SAMPLES, "Samples written"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.buildingsense.samples import PoiSource, SampleSettings, building_samples

        bpath, blayer = self.vector_source(parameters, self.BUILDINGS, context, feedback)
        img = self.parameterAsRasterLayer(parameters, self.IMAGERY, context)
        svp, _ = self.vector_source(parameters, self.STREET_VIEW_POINTS, context, feedback)
        ppath, player = self.vector_source(parameters, self.POIS, context, feedback)
        pois = PoiSource(ppath, player, self.field_name(parameters, self.POI_NAME_FIELD, context),
                         self.field_name(parameters, self.POI_CATEGORY_FIELD, context)) if ppath else None
        s = SampleSettings(self.parameterAsDouble(parameters, self.BUFFER, context),
                           self.parameterAsInt(parameters, self.CHIP_MAX_PX, context),
                           self.FORMATS[self.parameterAsEnum(parameters, self.IMAGE_FORMAT, context)],
                           self.parameterAsDouble(parameters, self.POI_NEAR, context),
                           self.parameterAsInt(parameters, self.MAX_POIS, context))
        folder = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        res = self.run_core(building_samples, bpath, folder, buildings_layer=blayer,
                            street_view_api=self._street_view_api(parameters, context),
                            id_field=self.field_name(parameters, self.ID_FIELD, context) or None,
                            imagery=self.raster_path(img, self.IMAGERY) if img else None,
                            street_view_folder=_text(self, parameters, self.STREET_VIEW_FOLDER, context),
                            street_view_points=svp, pois=pois,
                            attribute_fields=self.field_names(parameters, self.ATTRIBUTES, context),
                            settings=s, progress=self.progress(feedback))
        return {self.OUTPUT_FOLDER: folder, self.MANIFEST: res["manifest"], self.SAMPLES: res["samples"]}

    def _street_view_api(self, parameters, context):
        from ..core.buildingsense.streetview_fetch import STREET_VIEW_KEY_ENV, StreetViewApi

        url = _text(self, parameters, self.STREET_VIEW_URL, context)
        if not url:
            return None
        key = _secret(self, parameters, self.STREET_VIEW_AUTHCFG, STREET_VIEW_KEY_ENV, context)
        return StreetViewApi(url, key, size=self.parameterAsString(parameters, self.STREET_VIEW_SIZE, context),
                             fov=self.parameterAsDouble(parameters, self.STREET_VIEW_FOV, context))


class ClassifyBuildingFunctionAlgorithm(EdificeAlgorithm):
    SAMPLES, URL, MODEL, AUTHCFG, COMBINATION = "SAMPLES", "URL", "MODEL", "AUTHCFG", "COMBINATION"
    TEMPLATE, TAXONOMY, TAXONOMY_FILE, CATEGORY_LEVEL, CONCURRENCY = (
        "TEMPLATE", "TAXONOMY", "TAXONOMY_FILE", "CATEGORY_LEVEL", "CONCURRENCY")
    TEMPERATURE, MAX_TOKENS, TIMEOUT, PRICE_INPUT, PRICE_OUTPUT, USE_CACHE, CACHE_FOLDER = (
        "TEMPERATURE", "MAX_TOKENS", "TIMEOUT", "PRICE_INPUT", "PRICE_OUTPUT", "USE_CACHE", "CACHE_FOLDER")
    OUTPUT, CLASSIFIED, REQUESTS_SENT = "OUTPUT", "CLASSIFIED", "REQUESTS_SENT"
    GROUP, GROUP_ID = GROUP, GROUP_ID
    HELP = ("Building function by a large multimodal model (BuildingSense §3.3) through an OpenAI-compatible "
            "chat-completions endpoint: a hosted service or a local llama.cpp / vLLM server (URL, e.g. "
            "http://127.0.0.1:8080/v1, and MODEL). The key comes from AUTHCFG (Settings > Options > "
            "Authentication: a Basic configuration with the key as password, or an API-header one), else from "
            "the environment variable EDIFICE_LLM_API_KEY; it is never logged or written. Each sample of SAMPLES "
            "(from Building samples) is sent with the prompt TEMPLATE (the seed's structure: picture analysis, "
            "text analysis, reason, function, notes) for the data COMBINATION (the seed's seven: T, R, S, RT, ST, "
            "RS, RST), the categories of TAXONOMY at CATEGORY_LEVEL, images as base64 data URLs and a JSON-schema "
            "answer format. Answers are validated, a malformed one is asked for again once. At most CONCURRENCY "
            "requests at a time, 429/5xx retried with backoff (Retry-After honoured). Answers are cached on disk "
            "keyed by model, prompt and images, so a rerun or a resumed run only sends what is missing. Output: "
            "building_id, function, coarse_class and rci_class (the taxonomy's roll-up), confidence, reason, "
            "analyses, notes, status, raw_answer, tokens; the log has the token and cost summary.")

    def name(self):
        return "classifybuildingfunction"

    def displayName(self):  # noqa: N802
        return "Classify building function (multimodal model)"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(self.SAMPLES, "Samples folder (from Building samples)",
                                                     behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterString(self.URL, "Endpoint base URL (OpenAI-compatible)",
                                                       defaultValue="http://127.0.0.1:8080/v1"))
        self.addParameter(QgsProcessingParameterString(self.MODEL, "Model name"))
        self.addParameter(QgsProcessingParameterAuthConfig(self.AUTHCFG, "API key (authentication configuration)",
                                                           optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.COMBINATION, "Data combination",
                                                     options=[c[0] for c in COMBINATION_OPTIONS], defaultValue=6))
        self.addParameter(QgsProcessingParameterFile(self.TEMPLATE, "Prompt template (.toml; empty = BuildingSense's)",
                                                     extension="toml", optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.TAXONOMY, "Categories (taxonomy)",
                                                     options=self.taxonomy_options(),
                                                     defaultValue=1 + taxonomy_names().index("buildingsense_template")))
        self.addParameter(QgsProcessingParameterFile(self.TAXONOMY_FILE, "Taxonomy file (custom)", extension="csv",
                                                     optional=True))
        self.addParameter(Number(self.CATEGORY_LEVEL, "Taxonomy level the model answers at (0 = finest)",
                                 Number.Integer, 0, minValue=0))
        self.addParameter(Number(self.CONCURRENCY, "Requests at a time", Number.Integer, 4, minValue=1, maxValue=256))
        _advanced(self, [
            Number(self.TEMPERATURE, "Temperature", Number.Double, 0.0, minValue=0.0, maxValue=2.0),
            Number(self.MAX_TOKENS, "Most tokens per answer", Number.Integer, 2048, minValue=16),
            Number(self.TIMEOUT, "Timeout per request (s)", Number.Double, 180.0, minValue=1.0),
            Number(self.PRICE_INPUT, "Price per million prompt tokens", Number.Double, 0.0, minValue=0.0),
            Number(self.PRICE_OUTPUT, "Price per million completion tokens", Number.Double, 0.0, minValue=0.0),
            QgsProcessingParameterBoolean(self.USE_CACHE, "Use the answer cache", defaultValue=True),
            QgsProcessingParameterFile(self.CACHE_FOLDER, "Answer cache folder (empty = Edifice's cache)",
                                       behavior=QgsProcessingParameterFile.Folder, optional=True)])
        self.addParameter(QgsProcessingParameterVectorDestination(self.OUTPUT, "Building function",
                                                                  QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber(self.CLASSIFIED, "Buildings classified"))
        self.addOutput(QgsProcessingOutputNumber(self.REQUESTS_SENT, "Requests sent"))

    @staticmethod
    def taxonomy_options() -> list[str]:
        return ["custom CSV file (the taxonomy file parameter)"] + taxonomy_names()

    def _taxonomy(self, parameters, context) -> str:
        i = self.parameterAsEnum(parameters, self.TAXONOMY, context)
        if i > 0:
            return taxonomy_names()[i - 1]
        path = self.parameterAsFile(parameters, self.TAXONOMY_FILE, context)
        if not path:
            raise QgsProcessingException(f"{self.TAXONOMY_FILE}: a custom taxonomy needs its CSV file. "
                                         "Fix: choose the file, or a shipped taxonomy.")
        return path

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.buildingsense import KEY_ENV
        from ..core.buildingsense.classify import LlmSettings, classify_building_function

        out = _gpkg(self.parameterAsOutputLayer(parameters, self.OUTPUT, context), self.OUTPUT)
        s = LlmSettings(
            self.parameterAsString(parameters, self.URL, context), self.parameterAsString(parameters, self.MODEL, context),
            COMBINATION_OPTIONS[self.parameterAsEnum(parameters, self.COMBINATION, context)][1],
            _text(self, parameters, self.TEMPLATE, context), self._taxonomy(parameters, context),
            self.parameterAsInt(parameters, self.CATEGORY_LEVEL, context),
            self.parameterAsInt(parameters, self.CONCURRENCY, context),
            self.parameterAsDouble(parameters, self.TEMPERATURE, context),
            self.parameterAsInt(parameters, self.MAX_TOKENS, context),
            self.parameterAsDouble(parameters, self.TIMEOUT, context),
            price_input_per_mtok=self.parameterAsDouble(parameters, self.PRICE_INPUT, context),
            price_output_per_mtok=self.parameterAsDouble(parameters, self.PRICE_OUTPUT, context),
            cache_dir=_text(self, parameters, self.CACHE_FOLDER, context),
            use_cache=self.parameterAsBool(parameters, self.USE_CACHE, context))
        res = self.run_core(classify_building_function, self.parameterAsFile(parameters, self.SAMPLES, context), out,
                            s, api_key=_secret(self, parameters, self.AUTHCFG, KEY_ENV, context), progress=self.progress(feedback))
        self.style_output(context, out, "building_function.qml")
        return {self.OUTPUT: out, self.CLASSIFIED: res["classified"], self.REQUESTS_SENT: res["requests_sent"]}
