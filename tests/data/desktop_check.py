"""Runs inside a freshly started QGIS desktop (``qgis --code``) and reports what a user sees.

EDIFICE_DESKTOP_MODE=bare: the plugin installed from its zip into a Python without its packages:
the tools listed, the message bar's text, the installer dialog opens.
EDIFICE_DESKTOP_MODE=dialog: Map building use with polygons run from its dialog (a background
task, layers loaded on completion with their styles); parameters from EDIFICE_DESKTOP_PARAMS.
Writes EDIFICE_DESKTOP_RESULT (JSON) and a screenshot EDIFICE_DESKTOP_SHOT (PNG)."""
import json
import os
import time

from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtWidgets import QPushButton, QTextEdit
from qgis.utils import iface, plugins

res = {"plugin_loaded": "edifice" in plugins}


def wait(condition, timeout_s=300):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.05)
    return condition()


def bare():
    from qgis.gui import QgsMessageBarItem

    prov = QgsApplication.processingRegistry().providerById("edifice")
    res["algs"] = sorted(a.id() for a in prov.algorithms()) if prov else []
    item = iface.messageBar().currentItem()
    items = [item] if isinstance(item, QgsMessageBarItem) else []
    res["messages"] = [f"{i.title()} {i.text()}" for i in items]
    res["buttons"] = [b.text() for i in items for b in i.findChildren(QPushButton)]
    alg = QgsApplication.processingRegistry().algorithmById("edifice:mapbuildinguse")
    res["can_execute"] = list(alg.canExecute()) if alg else None
    import processing

    res["installer_dialog"] = processing.createAlgorithmDialog("edifice:installdependencies") is not None


def dialog():
    import processing

    params = json.load(open(os.environ["EDIFICE_DESKTOP_PARAMS"]))
    dlg = processing.createAlgorithmDialog("edifice:mapbuildinguse", params)
    dlg.show()
    device = dlg.mainWidget().wrappers["DEVICE"].wrappedWidget()
    res["device_widget"] = [type(device).__name__, [device.itemText(i) for i in range(device.count())]
                            if hasattr(device, "itemText") else []]
    dlg.runAlgorithm()  # as the Run button: a QgsProcessingAlgRunnerTask, layers loaded on completion
    wanted = {os.path.normpath(params["POLYGONS"]), os.path.normpath(params["USE_CLASS"])}

    def loaded():
        return wanted <= {os.path.normpath(lyr.source().split("|")[0]) for lyr in QgsProject.instance().mapLayers().values()}

    res["loaded"] = wait(loaded)
    res["layers"] = {os.path.basename(lyr.source().split("|")[0]): lyr.renderer().type()
                     for lyr in QgsProject.instance().mapLayers().values()}
    log = dlg.findChild(QTextEdit, "txtLog")
    res["log"] = log.toPlainText() if log is not None else ""
    dlg.close()
    canvas = iface.mapCanvas()
    refreshed = []
    canvas.mapCanvasRefreshed.connect(lambda: refreshed.append(1))
    canvas.zoomToFullExtent()
    canvas.refresh()
    wait(lambda: refreshed, 60)  # the screenshot shows the finished map


try:
    {"bare": bare, "dialog": dialog}[os.environ["EDIFICE_DESKTOP_MODE"]]()
except Exception as exc:  # reported; the test asserts on it
    import traceback

    res["error"] = traceback.format_exc()
wait(lambda: False, 1.5)  # let the window paint
iface.mainWindow().grab().save(os.environ["EDIFICE_DESKTOP_SHOT"])
with open(os.environ["EDIFICE_DESKTOP_RESULT"], "w") as f:
    json.dump(res, f)
os._exit(0)
