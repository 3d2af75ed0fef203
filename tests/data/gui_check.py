"""Runs inside the real QGIS GUI (qgis --code): reports what a user would see.

Besides opening every dialog it runs a real batch (two rows of edifice:retinex through
the Batch Processing dialog, as a user fills it) and a short training whose epochs must
reach the loss-curve dock. Inputs come from EDIFICE_GUI_INPUTS (a JSON file the test writes)."""
import json
import os

from qgis.core import QgsApplication
from qgis.utils import iface, plugins

res = {"plugin_loaded": "edifice" in plugins, "iface": iface is not None}
prov = QgsApplication.processingRegistry().providerById("edifice")
res["algs"] = sorted(a.id() for a in prov.algorithms()) if prov else []
try:
    import processing
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog

    dialogs = {}
    for alg_id in res["algs"]:
        dlg = processing.createAlgorithmDialog(alg_id)
        batch = BatchAlgorithmDialog(QgsApplication.processingRegistry().createAlgorithmById(alg_id))
        dialogs[alg_id] = dlg is not None and batch is not None
    res["dialogs"] = dialogs
except Exception as exc:  # report, the test asserts on it
    res["error"] = repr(exc)


def batch_run(alg_id, rows):
    """Fill the Batch Processing dialog of ``alg_id`` with ``rows`` ((inputs, outputs) dicts) and run it."""
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    from processing.tools import dataobjects

    dlg = BatchAlgorithmDialog(QgsApplication.processingRegistry().createAlgorithmById(alg_id))
    panel = dlg.mainWidget()
    panel.clear()
    ctx = dataobjects.createContext()
    for row, (inputs, outputs) in enumerate(rows):
        panel.addRow()
        for name, value in inputs.items():
            panel.wrappers[row][panel.parameter_to_column[name]].setParameterValue(value, ctx)
        for name, value in outputs.items():
            panel.tblParameters.cellWidget(row + 1, panel.parameter_to_column[name]).setValue(value)
    panel.checkLoadLayersOnCompletion.setChecked(False)
    dlg.runAlgorithm()
    return panel.batchRowCount()


inputs = json.load(open(os.environ["EDIFICE_GUI_INPUTS"])) if os.environ.get("EDIFICE_GUI_INPUTS") else None
if inputs:
    try:
        res["batch_rows"] = batch_run("edifice:retinex", [
            ({"INPUT": inputs["image"], "SIGMAS": "5,20"}, {"OUTPUT": inputs["batch_outputs"][0]}),
            ({"INPUT": inputs["image"], "SIGMAS": "8"}, {"OUTPUT": inputs["batch_outputs"][1]})])
    except Exception as exc:
        res["batch_error"] = repr(exc)
    try:
        from qgis.PyQt.QtWidgets import QDockWidget

        out = processing.run("edifice:trainbuildinguse", {
            "DATASET": inputs["dataset"], "VARIANT": 3, "ENCODER": 0, "BASE_WIDTH": 4, "EPOCHS": 2, "BATCH_SIZE": 4,
            "DEVICE": "cpu", "OUTPUT_CHECKPOINT": inputs["checkpoint"]})
        QgsApplication.processEvents()
        dock = iface.mainWindow().findChild(QDockWidget, "EdificeLossCurveDock")
        res["dock"] = None if dock is None else {"visible": dock.isVisible(), "epochs": dock.epochs,
                                                 "train": dock.train, "val": dock.val}
        res["epochs_run"] = out["EPOCHS_RUN"]
        # the dock closed by the user comes back from the plugin menu
        menu = next(a.menu() for a in iface.pluginMenu().actions() if a.menu() and "Edifice" in a.text())
        res["menu"] = [a.text() for a in menu.actions()]
        if dock is not None:
            dock.close()
            QgsApplication.processEvents()
            next(a for a in menu.actions() if a.text() == "Training loss").trigger()
            QgsApplication.processEvents()
            res["dock_reopened"] = dock.isVisible() and dock.epochs == [1.0, 2.0]
    except Exception as exc:
        res["training_error"] = repr(exc)
with open(os.environ["EDIFICE_GUI_RESULT"], "w") as f:
    json.dump(res, f)
os._exit(0)
