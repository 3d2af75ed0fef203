"""Runs inside the real QGIS GUI (qgis --code): reports what a user would see."""
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
with open(os.environ["EDIFICE_GUI_RESULT"], "w") as f:
    json.dump(res, f)
os._exit(0)
