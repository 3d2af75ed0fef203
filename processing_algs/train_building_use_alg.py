"""edifice:trainbuildinguse — train the building-use U-Net on a training-dataset folder
(adapter over core.use.training.train_building_use)."""
from __future__ import annotations

import json

from qgis.core import (QgsProcessingException, QgsProcessingOutputFile, QgsProcessingOutputNumber,
                       QgsProcessingOutputString, QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterFile, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterNumber, QgsProcessingParameterString)

from .base import EdificeAlgorithm
from .training_dataset_alg import run_core_named

#: (label, core variant id), in the order of the VARIANT enum
VARIANTS = [("Imagery only, single-task (use)", "imagery_single"),
            ("Imagery + POI, single-task (use)", "imagery_poi_single"),
            ("Imagery + POI, multi-task (use + footprint)", "imagery_poi_multitask"),
            ("Imagery only, multi-task (use + footprint; e.g. footprint-only labels)", "imagery_multitask")]
ENCODERS = ["resnet18", "resnet34", "resnet50"]
USE_CLASSES = ("residential", "commercial", "industrial")


def with_variant_labels(text: str) -> str:
    """``text`` with core variant ids ('imagery_single') replaced by the dialog's labels."""
    for label, variant in VARIANTS:
        text = text.replace(f"'{variant}'", f"'{label}'")
    return text


def _gui_epoch_callback():
    """Feeds the loss-curve dock when QGIS runs with its GUI (``iface``); None otherwise."""
    try:
        from qgis import utils
    except ImportError:
        return None
    if getattr(utils, "iface", None) is None:
        return None
    try:
        from ..qgis_plugin.training_dock import epoch_callback
        return epoch_callback(utils.iface)
    except Exception:  # the chart is a convenience: never fail a training run for it
        return None


class TrainBuildingUseAlgorithm(EdificeAlgorithm):
    DATASET, VARIANT, ENCODER, BASE_WIDTH = "DATASET", "VARIANT", "ENCODER", "BASE_WIDTH"
    EPOCHS, BATCH_SIZE, LEARNING_RATE, DEVICE, SEED = "EPOCHS", "BATCH_SIZE", "LEARNING_RATE", "DEVICE", "SEED"
    RESUME, PRETRAINED_ENCODER, OUTPUT_CHECKPOINT = "RESUME", "PRETRAINED_ENCODER", "OUTPUT_CHECKPOINT"
    LAMBDA_FOOTPRINT, LAMBDA_USE, PATIENCE = "LAMBDA_FOOTPRINT", "LAMBDA_USE", "PATIENCE"
    GROUP, GROUP_ID = "Building use", "buildinguse"
    HELP = ("Trains the U-Net with a ResNet encoder that maps building use (residential / commercial / "
            "industrial) on a folder made by 'Create building-use training dataset'. VARIANT: imagery only "
            "(single-task), imagery + POI maps (single-task), imagery + POI maps multi-task with a footprint "
            "head (default), or imagery only multi-task (e.g. footprint-only labels without POIs); the POI "
            "variants need a dataset with POI maps. Adam (LEARNING_RATE, default 1e-3) "
            "with cosine annealing, Dice losses, augmentation, early stopping on the validation loss; the best "
            "epoch is written to OUTPUT_CHECKPOINT (.pt: weights + model card with bands, scaling, classes and "
            "metrics). Next to it, <checkpoint>.resume.pt holds the last epoch's state: give it as RESUME to "
            "continue an interrupted run (an Edifice checkpoint of the same architecture fine-tunes from its "
            "weights). PRETRAINED_ENCODER: a local torchvision ResNet .pth file of the same depth. DEVICE: auto, "
            "cpu, cuda or cuda:N (the device used is reported). Advanced: PATIENCE (epochs without a lower "
            "validation loss before stopping, default 10); LAMBDA_FOOTPRINT and LAMBDA_USE weight "
            "the footprint and use Dice losses (loss = λ_B · L_B + λ_U · L_U, default 1 and 1; λ_B only counts "
            "for the multi-task variants). The loss of every epoch and the per-class F1 on "
            "the validation and test subsets are written to the log.")

    def name(self):
        return "trainbuildinguse"

    def displayName(self):  # noqa: N802
        return "Train building-use model"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(self.DATASET, "Training dataset folder",
                                                     behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterEnum(self.VARIANT, "Model variant", options=[v[0] for v in VARIANTS],
                                                     defaultValue=2))
        self.addParameter(QgsProcessingParameterEnum(self.ENCODER, "Encoder", options=ENCODERS, defaultValue=1))
        self.addParameter(QgsProcessingParameterNumber(self.EPOCHS, "Epochs (maximum; early stopping)",
                                                       QgsProcessingParameterNumber.Integer, defaultValue=50,
                                                       minValue=1))
        self.addParameter(QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size",
                                                       QgsProcessingParameterNumber.Integer, defaultValue=16,
                                                       minValue=1))
        self.addParameter(QgsProcessingParameterNumber(self.LEARNING_RATE, "Learning rate",
                                                       QgsProcessingParameterNumber.Double, defaultValue=1e-3,
                                                       minValue=0.0))
        self.addParameter(QgsProcessingParameterString(self.DEVICE, "Device (auto, cpu, cuda, cuda:N)",
                                                       defaultValue="auto"))
        self.addParameter(QgsProcessingParameterNumber(self.SEED, "Random seed", QgsProcessingParameterNumber.Integer,
                                                       defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterFile(self.RESUME, "Resume from (.resume.pt or checkpoint)",
                                                     optional=True, fileFilter="PyTorch files (*.pt *.pth)"))
        self.addParameter(QgsProcessingParameterFile(self.PRETRAINED_ENCODER,
                                                     "Pretrained encoder (local torchvision ResNet .pth)",
                                                     optional=True, fileFilter="PyTorch files (*.pth *.pt)"))
        p = QgsProcessingParameterNumber(self.BASE_WIDTH, "Encoder base width (64 = standard ResNet; smaller = "
                                         "faster, no pretrained weights)", QgsProcessingParameterNumber.Integer,
                                         defaultValue=64, minValue=1)
        p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(p)
        p = QgsProcessingParameterNumber(self.PATIENCE, "Early stopping patience (epochs without a lower "
                                         "validation loss)", QgsProcessingParameterNumber.Integer,
                                         defaultValue=10, minValue=1)
        p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(p)
        for name, label, default, lowest in (
                (self.LAMBDA_FOOTPRINT, "Footprint loss weight λ_B (multi-task variants)", 1.0, 0.0),
                (self.LAMBDA_USE, "Use loss weight λ_U (-1 = auto: 0 for footprint-only data, else 1)", -1.0, -1.0)):
            p = QgsProcessingParameterNumber(name, label, QgsProcessingParameterNumber.Double, defaultValue=default,
                                             minValue=lowest)
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_CHECKPOINT, "Model checkpoint",
                                                                fileFilter="PyTorch checkpoint (*.pt)"))
        self.addOutput(QgsProcessingOutputString("DEVICE_USED", "Device used"))
        self.addOutput(QgsProcessingOutputNumber("EPOCHS_RUN", "Epochs run"))
        self.addOutput(QgsProcessingOutputNumber("BEST_EPOCH", "Best epoch (lowest validation loss)"))
        self.addOutput(QgsProcessingOutputNumber("VAL_MEAN_F1", "Validation mean F1 (R, C, I)"))
        self.addOutput(QgsProcessingOutputNumber("TEST_MEAN_F1", "Test mean F1 (R, C, I)"))
        self.addOutput(QgsProcessingOutputString("METRICS", "Metrics summary (JSON: per-class F1 on val/test)"))
        self.addOutput(QgsProcessingOutputFile("RESUME_STATE", "State of the last epoch (for RESUME)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.use.training import train_building_use

        dataset = self.parameterAsFile(parameters, self.DATASET, context)
        if not dataset:
            raise QgsProcessingException("DATASET: no folder given. Fix: choose a training-dataset folder.")
        variant = VARIANTS[self.parameterAsEnum(parameters, self.VARIANT, context)][1]
        out = self.parameterAsFileOutput(parameters, self.OUTPUT_CHECKPOINT, context)
        kwargs = dict(
            variant=variant, encoder=ENCODERS[self.parameterAsEnum(parameters, self.ENCODER, context)],
            base_width=self.parameterAsInt(parameters, self.BASE_WIDTH, context),
            epochs=self.parameterAsInt(parameters, self.EPOCHS, context),
            patience=self.parameterAsInt(parameters, self.PATIENCE, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            learning_rate=self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
            lambda_footprint=self.parameterAsDouble(parameters, self.LAMBDA_FOOTPRINT, context),
            lambda_use=_auto(self.parameterAsDouble(parameters, self.LAMBDA_USE, context)),
            device=self.parameterAsString(parameters, self.DEVICE, context) or "auto",
            seed=self.parameterAsInt(parameters, self.SEED, context),
            resume_from=self.parameterAsFile(parameters, self.RESUME, context) or None,
            pretrained_encoder=self.parameterAsFile(parameters, self.PRETRAINED_ENCODER, context) or None,
            epoch_callback=_gui_epoch_callback(), progress=self.progress(feedback))
        if kwargs["learning_rate"] <= 0:
            raise QgsProcessingException("LEARNING_RATE: must be positive. Fix: e.g. 0.001.")
        feedback.pushInfo(f"Variant {variant}, encoder {kwargs['encoder']} (base width {kwargs['base_width']}), "
                          f"{kwargs['epochs']} epochs, batch {kwargs['batch_size']}, lr {kwargs['learning_rate']:g}, "
                          f"λ_B {kwargs['lambda_footprint']:g}, λ_U "
                          f"{'auto' if kwargs['lambda_use'] is None else format(kwargs['lambda_use'], 'g')}.")
        names = {"RESUME_FROM": self.RESUME, "DATASET": self.DATASET}
        try:
            r = run_core_named(train_building_use, names, dataset, out, **kwargs)
        except QgsProcessingException as exc:
            from ..core.use.training import _state_path
            if feedback.isCanceled() and _state_path(out).is_file():
                feedback.pushInfo(f"The state of the last finished epoch is in {_state_path(out)}: "
                                  "give it as RESUME to continue.")
            text = with_variant_labels(str(exc))
            if text != str(exc):
                raise QgsProcessingException(text) from exc
            raise
        feedback.pushInfo(f"Device used: {r['device']}.")
        metrics = {sub: {"mean_f1_use": m["mean_f1_use"], "overall_accuracy": m["overall_accuracy"],
                         "footprint_iou": m["footprint_iou"],
                         "f1": {c: m["per_class"][c]["f1"] for c in ("background",) + USE_CLASSES}}
                   for sub, m in r["metrics"].items()}
        for sub, m in metrics.items():
            feedback.pushInfo(f"{sub} per-class F1: " + ", ".join(f"{c} {v:.3f}" for c, v in m["f1"].items())
                              + f"; mean F1 (R, C, I) {m['mean_f1_use']:.3f}")
        test = metrics.get("test", {}).get("mean_f1_use")
        return {self.OUTPUT_CHECKPOINT: out, "DEVICE_USED": r["device"], "EPOCHS_RUN": r["epochs_run"],
                "BEST_EPOCH": r["best_epoch"], "VAL_MEAN_F1": metrics["validation"]["mean_f1_use"],
                "TEST_MEAN_F1": test if test is not None else float("nan"), "METRICS": json.dumps(metrics),
                "RESUME_STATE": r["resume_state"]}


def _auto(value: float) -> float | None:
    """LAMBDA_USE: a negative value means automatic (None for the core)."""
    return None if value < 0 else value
