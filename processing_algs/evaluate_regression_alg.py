"""edifice:evaluateregression — height / footprint accuracy (adapter over core.evaluation.runs)."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingParameterDefinition, QgsProcessingParameterMapLayer,
                       QgsProcessingParameterBoolean, QgsProcessingParameterNumber, QgsProcessingParameterString,
                       QgsProcessingParameterVectorLayer)

from . import eval_common as ec
from .base import EdificeAlgorithm


class EvaluateRegressionAlgorithm(EdificeAlgorithm):
    PREDICTION, PREDICTION_FIELD, REFERENCE, REFERENCE_FIELD = (
        "PREDICTION", "PREDICTION_FIELD", "REFERENCE", "REFERENCE_FIELD")
    BUILDING_MASK, MIN_REFERENCE, MIN_OVERLAP, BINS = "BUILDING_MASK", "MIN_REFERENCE", "MIN_OVERLAP", "BINS"
    BAND, REFERENCE_BAND, ALL_TOUCHED, SEED = "BAND", "REFERENCE_BAND", "ALL_TOUCHED", "SEED"
    GROUP, GROUP_ID = "Evaluation", "evaluation"
    HELP = ("Scores predicted heights (or another continuous value such as footprint fraction) against a "
            "reference: RMSE, wRMSE, MAE, ME (bias, prediction − reference), NMAD, CC, R², wR² (w = density of "
            "the pairs, SHAFTS-style) and the bias per reference-height bin.\n"
            "The comparison follows from the inputs: REFERENCE raster and PREDICTION raster: pixel by pixel "
            "(same CRS, pixel size and alignment; only the overlap; BUILDING_MASK keeps pixels inside buildings, "
            "MIN_REFERENCE drops reference values below it); REFERENCE polygons with REFERENCE_FIELD and a "
            "PREDICTION raster: mean of the raster under each building; REFERENCE polygons and PREDICTION "
            "polygons with PREDICTION_FIELD: each reference building matched to the predicted polygon covering "
            "most of it (at least MIN_OVERLAP; layers in different CRSs are reprojected). BINS are height-bin "
            "edges in metres (default 0,3,...,30; 'none' for no bins).\n"
            "Outputs: a metrics table, the full result as JSON and a self-contained HTML report with the "
            "scatter plot (shown in the Results Viewer); the Edifice evaluation dock plots it.")

    def name(self):
        return "evaluateregression"

    def displayName(self):  # noqa: N802
        return "Evaluate height / footprint regression"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterMapLayer(self.PREDICTION, "Prediction (raster or polygons)"))
        self.addParameter(QgsProcessingParameterString(self.PREDICTION_FIELD, "Prediction field (polygons)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterMapLayer(self.REFERENCE, "Reference (raster or polygons)"))
        self.addParameter(QgsProcessingParameterString(self.REFERENCE_FIELD, "Reference field (polygons)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer(self.BUILDING_MASK, "Raster vs raster: score only "
                                                            "pixels inside these polygons",
                                                            [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.MIN_REFERENCE, "Raster vs raster: leave out reference "
                                                       "values below", QgsProcessingParameterNumber.Double,
                                                       optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.MIN_OVERLAP, "Polygons vs polygons: minimum overlap "
                                                       "(fraction of the reference footprint)",
                                                       QgsProcessingParameterNumber.Double, defaultValue=0.1,
                                                       minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterString(self.BINS, "Height-bin edges (m; 'none' = no bins)",
                                                       defaultValue="0,3,6,9,12,15,18,21,24,27,30", optional=True))
        advanced = [
            QgsProcessingParameterNumber(self.BAND, "Band of the prediction raster",
                                         QgsProcessingParameterNumber.Integer, defaultValue=1, minValue=1),
            QgsProcessingParameterNumber(self.REFERENCE_BAND, "Band of the reference raster",
                                         QgsProcessingParameterNumber.Integer, defaultValue=1, minValue=1),
            QgsProcessingParameterBoolean(self.ALL_TOUCHED, "Raster per building: every touched pixel "
                                          "(not only pixel centres inside)", defaultValue=False),
            QgsProcessingParameterNumber(self.SEED, "Random seed (KDE sample, scatter sample)",
                                         QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0)]
        for p in advanced:
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        ec.add_report_outputs(self, "Regression")
        ec.add_number_outputs(self, {"N": "Pairs scored", "RMSE": "RMSE", "MAE": "MAE", "ME": "ME (bias)",
                                     "NMAD": "NMAD", "CC": "CC", "R2": "R²", "MATCHED": "Matched buildings",
                                     "UNMATCHED_REFERENCE": "Unmatched reference buildings"})

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.evaluation.runs import evaluate_regression, summary_lines

        pk, ppath, player = ec.layer_input(self, parameters, self.PREDICTION, context, feedback)
        rk, rpath, rlayer = ec.layer_input(self, parameters, self.REFERENCE, context, feedback)
        min_ref = parameters.get(self.MIN_REFERENCE)
        json_path = self.parameterAsFileOutput(parameters, ec.OUTPUT_JSON, context)
        html_path = self.parameterAsFileOutput(parameters, ec.OUTPUT_HTML, context)
        result = self.run_core(
            evaluate_regression, rpath, ppath,
            self.parameterAsString(parameters, self.REFERENCE_FIELD, context) or None,
            self.parameterAsString(parameters, self.PREDICTION_FIELD, context) or None,
            reference_layer=rlayer, prediction_layer=player, reference_kind=rk, prediction_kind=pk,
            building_mask=ec.vector_path(self, parameters, self.BUILDING_MASK, context, feedback),
            min_reference=None if min_ref in (None, "") else self.parameterAsDouble(parameters, self.MIN_REFERENCE,
                                                                                      context),
            min_overlap=self.parameterAsDouble(parameters, self.MIN_OVERLAP, context),
            band=self.parameterAsInt(parameters, self.BAND, context),
            reference_band=self.parameterAsInt(parameters, self.REFERENCE_BAND, context),
            all_touched=self.parameterAsBool(parameters, self.ALL_TOUCHED, context),
            bins=self.parameterAsString(parameters, self.BINS, context) or None,
            seed=self.parameterAsInt(parameters, self.SEED, context),
            json_path=json_path, html_path=html_path, progress=self.progress(feedback))
        for line in summary_lines(result):
            feedback.pushInfo(line)
        table = ec.write_metrics_table(self, parameters, context, result)
        self._json = json_path
        out = ec.report_outputs(table, json_path, html_path)
        out.update(ec.numbers(result, {"N": "n", "RMSE": "rmse", "MAE": "mae", "ME": "me", "NMAD": "nmad",
                                       "CC": "cc", "R2": "r2", "MATCHED": "matched",
                                       "UNMATCHED_REFERENCE": "unmatched_reference"}))
        return out

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802
        if getattr(self, "_json", None):
            ec.NOTIFIER.evaluated.emit(self._json)
        return {}
