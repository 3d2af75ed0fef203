"""Evaluation dock: plots the last evaluation result with pyqtgraph.

Classification: the confusion matrix as an image (rows = reference, top to
bottom; columns = prediction; colour = share of the reference row, i.e.
recall; counts written in the cells) and per-class precision / recall / F1
bars, for a level chosen in the dock. Regression: prediction vs reference
scatter with the 1:1 line, and the bias (ME) per reference-height bin.

The dock follows ``edifice:evaluateclassification`` / ``evaluateregression``
runs (their result JSON) and can open any result JSON. pyqtgraph is imported
only when the dock is built (``PYQTGRAPH_QT_LIB=PyQt5`` first, so a stray
Qt 6 binding never enters QGIS's Qt 5 process); without it the dock is
skipped with a log message.
"""
from __future__ import annotations

import json
import os

import numpy as np
from qgis.core import Qgis, QgsMessageLog
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (QComboBox, QDockWidget, QFileDialog, QHBoxLayout, QLabel, QPushButton,
                                 QVBoxLayout, QWidget)

#: colours of the precision / recall / F1 bars (same as the HTML report)
BAR_COLOURS = {"precision": (76, 120, 168), "recall": (245, 133, 24), "f1": (84, 162, 75)}


def import_pyqtgraph():
    """pyqtgraph on QGIS's Qt 5 binding (raises ImportError when unavailable)."""
    os.environ.setdefault("PYQTGRAPH_QT_LIB", "PyQt5")
    import pyqtgraph

    return pyqtgraph


def row_shares(cm) -> np.ndarray:
    """Confusion matrix divided by its row sums (0 where a row is empty)."""
    cm = np.asarray(cm, dtype=np.float64)
    tot = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, tot, out=np.zeros_like(cm), where=tot > 0)


def short_name(name: str, n_classes: int) -> str:
    """Axis label of a class: in full when few classes, else shortened."""
    limit = max(3, 28 // max(n_classes, 1))
    return name if len(name) <= limit else name[:limit - 1] + "."


def value_unit(result: dict, reference) -> str:
    """Unit of a regression's values: the result's ``value_unit`` when it has one, else metres for
    heights and none for footprint fractions (all reference values within 0..1)."""
    if result.get("value_unit"):
        return str(result["value_unit"])
    return "fraction" if len(reference) and float(np.nanmax(reference)) <= 1.0 else "m"


#: the dock's minimum width (px): a 4-class matrix with its labels is not clipped
MIN_WIDTH_PX = 460


class EvaluationDock(QDockWidget):
    """Dock widget with two plots; :meth:`show_result` draws a result dict."""

    def __init__(self, parent=None):
        pg = import_pyqtgraph()  # ImportError here means: no dock
        super().__init__("Edifice evaluation", parent)
        self.setObjectName("EdificeEvaluationDock")
        self.pg = pg
        self.result: dict | None = None
        self.path: str | None = None
        self.items: dict = {}
        body = QWidget(self)
        lay = QVBoxLayout(body)
        top = QHBoxLayout()
        self.level_box = QComboBox(body)
        self.level_box.setToolTip("Taxonomy level shown")
        self.level_box.currentTextChanged.connect(self._level_changed)
        self.open_button = QPushButton("Open result…", body)
        self.open_button.setToolTip("Open a result JSON written by an Edifice evaluation")
        self.open_button.clicked.connect(self._open_dialog)
        top.addWidget(self.level_box, 1)
        top.addWidget(self.open_button)
        lay.addLayout(top)
        self.summary = QLabel("No evaluation yet: run Edifice ▸ Evaluation in the Processing Toolbox.", body)
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        lay.addWidget(self.summary)
        self.plot_main = pg.PlotWidget(body)
        self.plot_second = pg.PlotWidget(body)
        for w in (self.plot_main, self.plot_second):
            w.setBackground("w")
            w.setMinimumHeight(220)
            lay.addWidget(w, 1)
        self.setWidget(body)
        self.setMinimumWidth(MIN_WIDTH_PX)  # room for the confusion matrix and its class labels

    # -- loading -----------------------------------------------------------
    def show_json(self, path: str) -> bool:
        """Load and draw a result JSON; shows and raises the dock. False (and a
        message in the dock) when the file cannot be read."""
        try:
            with open(path, encoding="utf-8") as f:
                result = json.load(f)
        except (OSError, ValueError) as exc:
            self.summary.setText(f"Could not read {path}: {exc}")
            return False
        self.path = path
        self.show_result(result)
        self.show()
        self.raise_()
        return True

    def _open_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open evaluation result", "", "JSON files (*.json)")
        if path:
            self.show_json(path)

    def show_result(self, result: dict) -> None:
        """Draw a classification or regression result (the dict the core returns)."""
        self.result = result
        self.level_box.blockSignals(True)
        self.level_box.clear()
        if result.get("kind") == "regression":
            self.level_box.setEnabled(False)
            self.level_box.blockSignals(False)
            self._draw_regression(result)
            return
        levels = list(result.get("levels") or [])
        self.level_box.addItems(levels)
        self.level_box.setEnabled(len(levels) > 1)
        self.level_box.blockSignals(False)
        self._draw_classification(result, levels[0] if levels else None)

    def _level_changed(self, level: str):
        if self.result is not None and self.result.get("kind") != "regression" and level:
            self._draw_classification(self.result, level)

    # -- drawing -------------------------------------------------------------
    def _reset(self):
        """Fresh plot widgets for each drawing (removing items from a pyqtgraph
        plot raises TypeErrors under QGIS's PyQt5 in itemChange)."""
        self.items = {}
        lay = self.widget().layout()
        for name in ("plot_main", "plot_second"):
            old = getattr(self, name)
            new = self.pg.PlotWidget(self.widget())
            new.setBackground("w")
            new.setMinimumHeight(220)
            lay.replaceWidget(old, new)
            old.hide()
            old.setParent(None)
            old.deleteLater()
            setattr(self, name, new)

    def _draw_classification(self, result: dict, level: str | None):
        pg = self.pg
        self._reset()
        s = (result.get("by_level") or {}).get(level, result) if level else result
        classes = list(s["classes"])
        cm = np.asarray(s["confusion_matrix"], dtype=np.int64)
        k = len(classes)
        m = result.get("matching") or {}
        self.summary.setText(
            f"<b>{result.get('comparison', '')} · {result.get('taxonomy', '')} · level {level or 'class'}</b><br>"
            f"overall accuracy {s['overall_accuracy']:.3f} · kappa {s['kappa']:.3f} · macro F1 "
            f"{s.get('averages', {}).get('macro', {}).get('f1', 0.0):.3f} · n {s.get('n')} "
            f"(ignored {s.get('ignored', 0)})<br>matched {m.get('matched', result.get('matched', '–'))} · "
            f"unmatched reference {m.get('unmatched_reference', 0)} · unmatched prediction "
            f"{m.get('unmatched_prediction', 0)}" + (f"<br><small>{self.path}</small>" if self.path else ""))
        # confusion matrix: reference row i drawn at y = k - 1 - i (first class on top; pyqtgraph
        # hides tick labels of inverted axes), prediction column j at x = j
        shares = row_shares(cm)
        img = pg.ImageItem(shares[::-1], axisOrder="row-major")
        cmap = pg.ColorMap([0.0, 1.0], [(247, 251, 255), (8, 48, 107)])
        img.setLookupTable(cmap.getLookupTable(0.0, 1.0, 256))
        img.setLevels([0.0, 1.0])
        img.setRect(0, 0, k, k)
        self.plot_main.addItem(img)
        texts = []
        for i in range(k):
            for j in range(k):
                t = pg.TextItem(str(int(cm[i, j])), color="w" if shares[i, j] > 0.55 else "k", anchor=(0.5, 0.5))
                t.setPos(j + 0.5, k - i - 0.5)
                self.plot_main.addItem(t)
                texts.append(t)
        vb = self.plot_main.getViewBox()  # not aspect-locked: the matrix fills the dock's width
        self.plot_main.getAxis("bottom").setTicks([[(n + 0.5, short_name(c, k)) for n, c in enumerate(classes)]])
        self.plot_main.getAxis("left").setTicks([[(k - n - 0.5, c) for n, c in enumerate(classes)]])
        self.plot_main.getAxis("left").setWidth(int(24 + 9 * max((len(c) for c in classes), default=4)))
        self.plot_main.setLabel("bottom", "prediction")
        self.plot_main.setLabel("left", "reference")
        self.plot_main.setTitle("Confusion matrix (colour: row share)")
        vb.setRange(xRange=(0, k), yRange=(0, k), padding=0.02)
        # per-class bars
        per = s["per_class"]
        self.plot_second.addLegend(offset=(10, 5), colCount=3)
        bars = {}
        width = 0.27
        for n, key in enumerate(("precision", "recall", "f1")):
            heights = np.array([per[c][key] for c in classes], dtype=np.float64)
            b = pg.BarGraphItem(x=np.arange(k) + (n - 1) * width, height=heights, width=width,
                                brush=pg.mkBrush(*BAR_COLOURS[key]), name="F1" if key == "f1" else key)
            self.plot_second.addItem(b)
            bars[key] = b
        self.plot_second.getAxis("bottom").setTicks([[(n, short_name(c, k)) for n, c in enumerate(classes)]])
        self.plot_second.setYRange(0, 1.35)  # headroom: the legend sits above bars of 1.0
        self.plot_second.setTitle("Per class (one-vs-rest)")
        self.items = {"kind": "classification", "level": level, "classes": classes, "matrix": img,
                      "matrix_counts": cm, "cell_texts": texts, "bars": bars}

    def _draw_regression(self, result: dict):
        pg = self.pg
        self._reset()
        f = {k: ("–" if result.get(k) is None else f"{result[k]:.3f}")
             for k in ("rmse", "wrmse", "mae", "me", "nmad", "cc", "r2", "wr2")}
        m = result.get("matching") or {}
        extra = (f"<br>matched {m.get('matched')} · unmatched reference {m.get('unmatched_reference', 0)} · "
                 f"unmatched prediction {m.get('unmatched_prediction', 0)}") if m else ""
        self.summary.setText(
            f"<b>{result.get('comparison', '')} · {result.get('unit', '')} · n {result.get('n')}</b><br>"
            f"RMSE {f['rmse']} · wRMSE {f['wrmse']} · MAE {f['mae']} · ME {f['me']} · NMAD {f['nmad']}<br>"
            f"CC {f['cc']} · R² {f['r2']} · wR² {f['wr2']}" + extra
            + (f"<br><small>{self.path}</small>" if self.path else ""))
        sample = result.get("sample") or {}
        r = np.asarray(sample.get("reference") or [], dtype=np.float64)
        p = np.asarray(sample.get("prediction") or [], dtype=np.float64)
        scatter = pg.ScatterPlotItem(x=r, y=p, size=5, pen=None, brush=pg.mkBrush(76, 120, 168, 120))
        self.plot_main.addItem(scatter)
        lo = float(min(r.min(), p.min())) if len(r) else 0.0
        hi = float(max(r.max(), p.max())) if len(r) else 1.0
        line = pg.PlotDataItem([lo, hi], [lo, hi], pen=pg.mkPen((214, 39, 40), width=1, style=Qt.DashLine))
        self.plot_main.addItem(line)
        pad = 0.05 * (hi - lo or 1.0)  # the data's range, not one widened by an aspect lock
        self.plot_main.getViewBox().setRange(xRange=(lo - pad, hi + pad), yRange=(lo - pad, hi + pad), padding=0)
        unit = f" ({value_unit(result, r)})"
        self.plot_main.setLabel("bottom", "reference" + unit)
        self.plot_main.setLabel("left", "prediction" + unit)
        self.plot_main.setTitle("Prediction vs reference (1:1 dashed)")
        bins = [b for b in (result.get("bins") or []) if b.get("n")]
        names = [f"{b['lower']:g}-{b['upper']:g}" if b.get("upper") is not None else f">={b['lower']:g}"
                 for b in bins]
        me = np.array([b["me"] for b in bins], dtype=np.float64)
        bias = pg.BarGraphItem(x=np.arange(len(bins)), height=me, width=0.7, brush=pg.mkBrush(76, 120, 168))
        self.plot_second.addItem(bias)
        self.plot_second.addLine(y=0, pen=pg.mkPen((120, 120, 120)))
        self.plot_second.getAxis("bottom").setTicks([[(n, c) for n, c in enumerate(names)]])
        self.plot_second.setLabel("bottom", "reference bin")
        self.plot_second.setLabel("left", "ME (prediction − reference)" + unit)
        self.plot_second.setTitle("Bias per reference bin")
        self.items = {"kind": "regression", "scatter": scatter, "one_to_one": line, "bias": bias, "bin_names": names,
                      "range": (lo - pad, hi + pad)}


def add_to_interface(iface):
    """Create the dock (hidden) in QGIS's main window, a menu entry to show it,
    and follow evaluation runs. Returns the dock, or None (logged) when
    pyqtgraph cannot be imported."""
    try:
        dock = EvaluationDock(iface.mainWindow())
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken pyqtgraph/Qt binding mix
        QgsMessageLog.logMessage(f"Edifice: the evaluation dock is not available (pyqtgraph: {exc}). "
                                 "Evaluation reports are still written as HTML and JSON.", "Edifice", Qgis.Warning)
        return None
    iface.addDockWidget(Qt.RightDockWidgetArea, dock)
    dock.hide()
    action = dock.toggleViewAction()
    action.setText("Evaluation results")
    iface.addPluginToMenu("&Edifice", action)
    from ..processing_algs.eval_common import NOTIFIER

    NOTIFIER.evaluated.connect(dock.show_json)
    return dock


def remove_from_interface(iface, dock) -> None:
    """Undo :func:`add_to_interface`."""
    if dock is None:
        return
    from ..processing_algs.eval_common import NOTIFIER

    try:
        NOTIFIER.evaluated.disconnect(dock.show_json)
    except TypeError:
        pass
    iface.removePluginMenu("&Edifice", dock.toggleViewAction())
    iface.removeDockWidget(dock)
    dock.deleteLater()
