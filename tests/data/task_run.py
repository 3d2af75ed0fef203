"""Runs inside a freshly started QGIS desktop (``qgis --code``): runs Edifice algorithms as
their dialogs do, in a QgsProcessingAlgRunnerTask (a worker thread of the task manager),
before anything but the plugin's own loading imported pyogrio.

Jobs come from EDIFICE_TASK_JOBS (a JSON list of {"alg": id, "params": {...}}); the result
goes to EDIFICE_TASK_RESULT: {"jobs": [{"ok", "results", "log"}...], "pyogrio": {...}}."""
import json
import os
import sys
import time

from qgis.core import (QgsApplication, QgsProcessingAlgRunnerTask, QgsProcessingContext,
                       QgsProcessingFeedback, QgsProject)


class _Feedback(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.lines = []

    def reportError(self, error, fatalError=False):  # noqa: N802, N803
        self.lines.append(f"ERROR: {error}")

    def pushInfo(self, info):  # noqa: N802
        self.lines.append(info)

    def pushWarning(self, warning):  # noqa: N802
        self.lines.append(f"WARNING: {warning}")


def run_in_task(alg_id, params, timeout_s=300):
    """Run ``alg_id`` in a QgsProcessingAlgRunnerTask as a dialog does; (ok, results, log)."""
    alg = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
    if alg is None:
        return False, {}, f"algorithm {alg_id} not found"
    context, feedback = QgsProcessingContext(), _Feedback()
    context.setProject(QgsProject.instance())
    done = {}
    task = QgsProcessingAlgRunnerTask(alg, params, context, feedback)
    task.executed.connect(lambda ok, results: done.update(ok=ok, results=results))
    QgsApplication.taskManager().addTask(task)
    deadline = time.monotonic() + timeout_s
    while "ok" not in done and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.02)
    results = {k: str(v) for k, v in (done.get("results") or {}).items()}
    return bool(done.get("ok")), results, "\n".join(feedback.lines)


def main():
    res = {"pyogrio_imported_at_load": "pyogrio" in sys.modules, "jobs": []}
    try:
        with open(os.environ["EDIFICE_TASK_JOBS"]) as f:
            jobs = json.load(f)
        for job in jobs:
            ok, results, log = run_in_task(job["alg"], job["params"])
            res["jobs"].append({"ok": ok, "results": results, "log": log})
        import pyogrio

        res["pyogrio"] = {"gdal": pyogrio.__gdal_version_string__, "data": pyogrio.get_gdal_data_path(),
                          "module": pyogrio.__file__}
    except Exception as exc:  # reported; the test asserts on it
        res["error"] = repr(exc)
    with open(os.environ["EDIFICE_TASK_RESULT"], "w") as f:
        json.dump(res, f)


main()
os._exit(0)  # skip exitQgis (layers alive at exit segfault)
