"""Runs inside a freshly started QGIS desktop (``qgis --code``): each job is run from its algorithm's
dialog as an analyst does (parameters filled in, the Run button: a QgsProcessingAlgRunnerTask, outputs
loaded into the project on completion with the styles the algorithm gives them).

Jobs come from EDIFICE_DIALOG_JOBS (a JSON list of {"alg": id, "params": {...}, "outputs": [paths]});
the result goes to EDIFICE_DIALOG_RESULT: {"jobs": [{"loaded", "layers": {path: [kind, renderer]}, "log"}]};
a screenshot of the main window after each job goes to EDIFICE_DIALOG_SHOTS/<n>_<alg>.png."""
import json
import os
import time
import traceback

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtWidgets import QTextEdit
from qgis.utils import iface


def wait(condition, timeout_s=300):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.05)
    return condition()


def loaded_layers() -> dict:
    """{normalised file path: [layer kind, renderer type]} of the layers in the project."""
    out = {}
    for lyr in QgsProject.instance().mapLayers().values():
        path = os.path.normpath(lyr.source().split("|")[0])
        kind = "raster" if isinstance(lyr, QgsRasterLayer) else "vector"
        out[path] = [kind, lyr.renderer().type() if lyr.renderer() else None]
    return out


def run_from_dialog(job: dict) -> dict:
    import processing

    dlg = processing.createAlgorithmDialog(job["alg"], job["params"])
    dlg.show()
    dlg.runAlgorithm()  # as the Run button
    wanted = {os.path.normpath(p) for p in job["outputs"]}
    ok = wait(lambda: wanted <= set(loaded_layers()))
    log = dlg.findChild(QTextEdit, "txtLog")
    res = {"loaded": ok, "layers": {p: v for p, v in loaded_layers().items() if p in wanted},
           "log": log.toPlainText() if log is not None else ""}
    dlg.close()
    return res


def main():
    jobs = json.load(open(os.environ["EDIFICE_DIALOG_JOBS"]))
    shots = os.environ["EDIFICE_DIALOG_SHOTS"]
    os.makedirs(shots, exist_ok=True)
    res = {"jobs": []}
    for n, job in enumerate(jobs):
        try:
            res["jobs"].append(run_from_dialog(job))
        except Exception:  # reported; the test asserts on it
            res["jobs"].append({"loaded": False, "layers": {}, "log": traceback.format_exc()})
        iface.mapCanvas().zoomToFullExtent()
        wait(lambda: False, 1.0)  # let the canvas paint
        iface.mainWindow().grab().save(os.path.join(shots, f"{n}_{job['alg'].split(':')[1]}.png"))
    with open(os.environ["EDIFICE_DIALOG_RESULT"], "w") as f:
        json.dump(res, f)


try:
    main()
finally:
    os._exit(0)  # skip exitQgis (layers alive at exit segfault)
