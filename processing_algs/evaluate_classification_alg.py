"""edifice:evaluateclassification — building-use accuracy (adapter over core.evaluation.runs)."""
from __future__ import annotations

from qgis.core import (QgsProcessingException, QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterFile, QgsProcessingParameterMapLayer, QgsProcessingParameterNumber,
                       QgsProcessingParameterString, QgsProcessingParameterVectorLayer, QgsProcessing)

from . import eval_common as ec
from .base import EdificeAlgorithm

#: LEVEL options (level of comparison) -> core name
COMPARISONS = [("building: predicted polygons matched to reference polygons by overlap", "building"),
               ("pixel: class raster vs reference raster or polygons", "pixel"),
               ("table: attributes joined by an id field (or two fields of one table)", "table")]
#: Shipped taxonomies in a fixed order (enum indices are part of the qgis_process interface);
#: files added later are appended after these.
SHIPPED = ["eubucco_type", "osm_building", "nyc_building_class", "buildingsense_template"]
UNKNOWN = [("map to 'other'", "other"), ("refuse (error listing them)", "error"),
           ("leave out of scoring (ignored)", "ignore")]


def taxonomy_names() -> list[str]:
    from ..core.taxonomy import list_taxonomies

    return SHIPPED + [t for t in list_taxonomies() if t not in SHIPPED]


def taxonomy_options(first: str) -> list[str]:
    """Enum options: 0 = ``first``, 1 = custom file, 2.. = shipped taxonomies."""
    return [first, "custom CSV file (the taxonomy file parameter)"] + taxonomy_names()


class EvaluateClassificationAlgorithm(EdificeAlgorithm):
    LEVEL, PREDICTION, PREDICTION_FIELD, REFERENCE, REFERENCE_FIELD = (
        "LEVEL", "PREDICTION", "PREDICTION_FIELD", "REFERENCE", "REFERENCE_FIELD")
    REFERENCE_TAXONOMY, REFERENCE_TAXONOMY_FILE = "REFERENCE_TAXONOMY", "REFERENCE_TAXONOMY_FILE"
    PREDICTION_TAXONOMY, PREDICTION_TAXONOMY_FILE = "PREDICTION_TAXONOMY", "PREDICTION_TAXONOMY_FILE"
    SCORE_LEVEL, UNKNOWN_LABELS, MIN_OVERLAP = "SCORE_LEVEL", "UNKNOWN_LABELS", "MIN_OVERLAP"
    ID_FIELD, PREDICTION_ID_FIELD = "ID_FIELD", "PREDICTION_ID_FIELD"
    CLASS_NAMES, REFERENCE_CLASS_NAMES, BUILDING_MASK, BAND = (
        "CLASS_NAMES", "REFERENCE_CLASS_NAMES", "BUILDING_MASK", "BAND")
    N_BOOT, SEED = "N_BOOT", "SEED"
    GROUP, GROUP_ID = "Evaluation", "evaluation"
    HELP = ("Scores predicted building use against a reference: confusion matrix (rows = reference, columns = "
            "prediction), per-class precision / recall / F1, overall accuracy, Cohen's kappa, macro / weighted "
            "averages with bootstrap confidence intervals, and matched / unmatched counts.\n"
            "LEVEL of comparison: building (each reference polygon is matched to the predicted polygon "
            "covering most of it, at least MIN_OVERLAP of its area; layers in different CRSs are reprojected; "
            "the same layer on both sides compares two of its fields), pixel (PREDICTION is a class raster; "
            "REFERENCE a raster on the same grid or polygons rasterised on it; CLASS_NAMES turns raster values "
            "into labels, e.g. 'none,residential,commercial,industrial' or '1=residential,2=commercial'), "
            "table (rows joined on ID_FIELD; the same table on both sides compares two of its fields).\n"
            "Labels go through a taxonomy (REFERENCE_TAXONOMY; the prediction side uses the same unless "
            "PREDICTION_TAXONOMY says otherwise): the shipped eubucco_type, osm_building, nyc_building_class, "
            "buildingsense_template, or a custom CSV (header: level names fine to coarse). SCORE_LEVEL names "
            "the level(s) to score at (e.g. rci, or type,rci, or all); empty = the coarsest (R/C/I). "
            "UNKNOWN_LABELS says what happens to labels the taxonomy does not know. Labels meaning 'no use' "
            "(taxonomy class none) and empty labels are left out and counted as ignored.\n"
            "Outputs: a metrics table (level, class, metric, value), the full result as JSON and a "
            "self-contained HTML report (shown in the Results Viewer); the Edifice evaluation dock plots it.")

    def name(self):
        return "evaluateclassification"

    def displayName(self):  # noqa: N802
        return "Evaluate building-use classification"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterEnum(self.LEVEL, "Level of comparison",
                                                     options=[c[0] for c in COMPARISONS], defaultValue=0))
        self.addParameter(QgsProcessingParameterMapLayer(self.PREDICTION, "Prediction (polygons, table or class raster)"))
        # Field names as text (not field parameters): PREDICTION / REFERENCE are map-layer parameters that
        # take rasters (pixel level) as well as polygons and tables, so there is no one layer to list fields of.
        self.addParameter(QgsProcessingParameterString(self.PREDICTION_FIELD, "Prediction field (building / table level)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterMapLayer(self.REFERENCE, "Reference (polygons, table or class raster)"))
        self.addParameter(QgsProcessingParameterString(self.REFERENCE_FIELD, "Reference field (polygons / table)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.REFERENCE_TAXONOMY, "Reference taxonomy",
                                                     options=taxonomy_options("none: labels as they are"),
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterFile(self.REFERENCE_TAXONOMY_FILE, "Reference taxonomy file (custom)",
                                                     extension="csv", optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.PREDICTION_TAXONOMY, "Prediction taxonomy",
                                                     options=taxonomy_options("same as the reference"),
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterFile(self.PREDICTION_TAXONOMY_FILE, "Prediction taxonomy file (custom)",
                                                     extension="csv", optional=True))
        self.addParameter(QgsProcessingParameterString(self.SCORE_LEVEL, "Taxonomy level(s) to score at "
                                                       "(e.g. rci; type,rci; all; empty = coarsest)", optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.UNKNOWN_LABELS, "Labels not in the taxonomy",
                                                     options=[u[0] for u in UNKNOWN], defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(self.MIN_OVERLAP, "Building level: minimum overlap "
                                                       "(fraction of the reference footprint)",
                                                       QgsProcessingParameterNumber.Double, defaultValue=0.1,
                                                       minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterString(self.ID_FIELD, "Table level: id field (reference)", optional=True))
        self.addParameter(QgsProcessingParameterString(self.PREDICTION_ID_FIELD, "Table level: id field of the "
                                                       "prediction (default: same name)", optional=True))
        self.addParameter(QgsProcessingParameterString(self.CLASS_NAMES, "Pixel level: prediction raster value -> "
                                                       "label ('a,b,c' or '1=a,2=b')", optional=True))
        self.addParameter(QgsProcessingParameterString(self.REFERENCE_CLASS_NAMES, "Pixel level: reference raster "
                                                       "value -> label", optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer(self.BUILDING_MASK, "Pixel level: score only pixels "
                                                            "inside these polygons", [QgsProcessing.TypeVectorPolygon],
                                                            optional=True))
        advanced = [
            QgsProcessingParameterNumber(self.BAND, "Pixel level: band of the class raster",
                                         QgsProcessingParameterNumber.Integer, defaultValue=1, minValue=1),
            QgsProcessingParameterNumber(self.N_BOOT, "Bootstrap resamples for confidence intervals (0 = none)",
                                         QgsProcessingParameterNumber.Integer, defaultValue=1000, minValue=0),
            QgsProcessingParameterNumber(self.SEED, "Random seed (bootstrap)", QgsProcessingParameterNumber.Integer,
                                         defaultValue=0, minValue=0)]
        for p in advanced:
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        ec.add_report_outputs(self, "Classification")
        ec.add_number_outputs(self, {"OVERALL_ACCURACY": "Overall accuracy (first level)",
                                     "KAPPA": "Cohen's kappa (first level)", "MACRO_F1": "Macro F1 (first level)",
                                     "MATCHED": "Matched items", "UNMATCHED_REFERENCE": "Unmatched reference items",
                                     "UNMATCHED_PREDICTION": "Unmatched predicted items"})

    def _taxonomy(self, parameters, context, enum_name, file_name):
        i = self.parameterAsEnum(parameters, enum_name, context)
        if i == 0:
            return None
        if i == 1:
            path = self.parameterAsFile(parameters, file_name, context)
            if not path:
                raise QgsProcessingException(f"{file_name}: a custom taxonomy needs its CSV file. "
                                             "Fix: choose the file, or a shipped taxonomy.")
            return path
        return taxonomy_names()[i - 2]

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.evaluation.runs import evaluate_classification, summary_lines

        comparison = COMPARISONS[self.parameterAsEnum(parameters, self.LEVEL, context)][1]
        pk, ppath, player = ec.layer_input(self, parameters, self.PREDICTION, context, feedback)
        rk, rpath, rlayer = ec.layer_input(self, parameters, self.REFERENCE, context, feedback)
        if comparison == "pixel" and pk != "raster":
            raise QgsProcessingException("PREDICTION: pixel level needs a class raster. "
                                         "Fix: choose the raster, or LEVEL building/table for polygons.")
        if comparison != "pixel" and (pk == "raster" or rk == "raster"):
            raise QgsProcessingException(f"{self.PREDICTION if pk == 'raster' else self.REFERENCE}: a raster is "
                                         f"only compared at pixel level. Fix: set LEVEL to pixel.")
        json_path = self.parameterAsFileOutput(parameters, ec.OUTPUT_JSON, context)
        html_path = self.parameterAsFileOutput(parameters, ec.OUTPUT_HTML, context)
        unknown = UNKNOWN[self.parameterAsEnum(parameters, self.UNKNOWN_LABELS, context)][1]
        result = self.run_core(
            evaluate_classification, comparison, rpath, ppath,
            self.parameterAsString(parameters, self.REFERENCE_FIELD, context) or None,
            self.parameterAsString(parameters, self.PREDICTION_FIELD, context) or None,
            reference_layer=rlayer, prediction_layer=player, reference_kind=rk,
            id_field=self.parameterAsString(parameters, self.ID_FIELD, context) or None,
            prediction_id_field=self.parameterAsString(parameters, self.PREDICTION_ID_FIELD, context) or None,
            taxonomy=self._taxonomy(parameters, context, self.REFERENCE_TAXONOMY, self.REFERENCE_TAXONOMY_FILE),
            prediction_taxonomy=self._taxonomy(parameters, context, self.PREDICTION_TAXONOMY,
                                               self.PREDICTION_TAXONOMY_FILE),
            levels=self.parameterAsString(parameters, self.SCORE_LEVEL, context) or None, unknown=unknown,
            min_overlap=self.parameterAsDouble(parameters, self.MIN_OVERLAP, context),
            class_names=self.parameterAsString(parameters, self.CLASS_NAMES, context) or None,
            reference_class_names=self.parameterAsString(parameters, self.REFERENCE_CLASS_NAMES, context) or None,
            building_mask=ec.vector_path(self, parameters, self.BUILDING_MASK, context, feedback),
            band=self.parameterAsInt(parameters, self.BAND, context),
            n_boot=self.parameterAsInt(parameters, self.N_BOOT, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            json_path=json_path, html_path=html_path, progress=self.progress(feedback))
        for line in summary_lines(result):
            feedback.pushInfo(line)
        for text in result.get("warnings") or []:
            feedback.pushWarning(text)
        for side in ("reference", "prediction"):
            unk = result.get(f"unknown_{side}") or {}
            if unk:
                feedback.pushWarning(f"{sum(unk.values())} {side} labels are not in the taxonomy and were "
                                     f"treated as '{unknown}': " + ", ".join(f"{k} ({n})" for k, n in
                                                                           list(unk.items())[:20]))
        table = ec.write_metrics_table(self, parameters, context, result)
        self._json = json_path
        out = ec.report_outputs(table, json_path, html_path)
        out.update(ec.numbers(result, {"OVERALL_ACCURACY": "overall_accuracy", "KAPPA": "kappa",
                                       "MACRO_F1": lambda r: r.get("averages", {}).get("macro", {}).get("f1"),
                                       "MATCHED": "matched", "UNMATCHED_REFERENCE": "unmatched_reference",
                                       "UNMATCHED_PREDICTION": "unmatched_prediction"}))
        return out

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802
        if getattr(self, "_json", None):
            ec.NOTIFIER.evaluated.emit(self._json)
        return {}
