"""Runs inside a freshly started QGIS desktop (``qgis --code``) and reports what a user sees.

EDIFICE_DESKTOP_MODE=bare: the plugin installed from its zip into a Python without its packages:
the tools listed, the message bar's text; then the message's Install button is clicked and the
installer dialog it opens is run (package index INDEX_URL from EDIFICE_DESKTOP_PARAMS, the rest
as the dialog offers it); its result and log, and whether the tools can run afterwards.
EDIFICE_DESKTOP_MODE=dialog: Map building use with polygons run from its dialog (a background
task, layers loaded on completion with their styles); parameters from EDIFICE_DESKTOP_PARAMS.
Writes EDIFICE_DESKTOP_RESULT (JSON) and a screenshot EDIFICE_DESKTOP_SHOT (PNG)."""
import json
import os
import sys
import time

from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtCore import QTimer
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
    buttons = [b for i in items for b in i.findChildren(QPushButton) if b.text() == "Install dependencies…"]
    if buttons:
        params = json.load(open(os.environ["EDIFICE_DESKTOP_PARAMS"]))
        QTimer.singleShot(500, lambda: run_installer(params["INDEX_URL"]))
        buttons[0].click()  # opens the installer (a modal dialog) as a user's click does
    res["can_execute_after"] = list(alg.canExecute()) if alg else None


def installer_dialog():
    """The open Install dependencies dialog, or None (not shown yet)."""
    from qgis.PyQt.QtWidgets import QApplication

    for w in QApplication.topLevelWidgets():
        alg = getattr(w, "algorithm", None)
        if w.isVisible() and callable(alg) and alg() is not None and alg().id() == "edifice:installdependencies":
            return w
    return None


def run_installer(index_url, tries=60):
    """Inside the modal installer dialog opened by the button: set the package index, press Run."""
    from qgis.core import QgsProcessingContext

    dlg = installer_dialog()
    if dlg is None:
        if tries:
            QTimer.singleShot(500, lambda: run_installer(index_url, tries - 1))
        else:
            res["error"] = "the installer dialog did not open"
        return
    res["installer_dialog"] = dlg.algorithm().id()
    try:
        dlg.mainWidget().wrappers["INDEX_URL"].setParameterValue(index_url, QgsProcessingContext())
        finished = []
        dlg.algorithmFinished.connect(lambda ok, results: finished.append((ok, results)))
        dlg.runAlgorithm()  # FlagNoThreading: runs here, on the main thread
        wait(lambda: finished, 900)
        res["install"] = [finished[0][0], dict(finished[0][1])] if finished else None
        log = dlg.findChild(QTextEdit, "txtLog")
        res["install_log"] = log.toPlainText() if log is not None else ""
        dlg.grab().save(os.environ["EDIFICE_DESKTOP_SHOT"].replace(".png", "-installer.png"))
    except Exception:  # reported; a raise here would open QGIS's error dialog and block
        import traceback

        res["error"] = traceback.format_exc()
    finally:
        dlg.close()


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

    log = dlg.findChild(QTextEdit, "txtLog")
    failed = lambda: log is not None and "Execution failed" in log.toPlainText()  # noqa: E731
    wait(lambda: loaded() or failed())
    res["loaded"] = loaded()
    res["layers"] = {os.path.basename(lyr.source().split("|")[0]): lyr.renderer().type()
                     for lyr in QgsProject.instance().mapLayers().values()}
    res["log"] = log.toPlainText() if log is not None else ""
    res["modules"] = {m: getattr(sys.modules.get(m), "__file__", "") for m in ("rasterio", "torch", "shapely", "pyogrio")}
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
