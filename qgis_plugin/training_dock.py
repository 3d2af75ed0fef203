"""Live loss curve of a building-use training run, as a dock in the QGIS window.

``edifice:trainbuildinguse`` runs in a Processing worker thread; when QGIS has
its GUI it passes :func:`epoch_callback`'s result to the core as
``epoch_callback``. Each epoch record is sent through a Qt signal to a bridge
object living in the GUI thread (a queued connection), which creates the dock
on first use and adds the point — widgets are only touched in the GUI thread.

pyqtgraph is imported only when the dock is created (never when the plugin is
imported), with ``PYQTGRAPH_QT_LIB=PyQt5`` so it uses QGIS's own Qt binding.
"""
from __future__ import annotations

import os

from qgis.PyQt.QtCore import QCoreApplication, QObject, Qt, pyqtSignal, pyqtSlot
from qgis.PyQt.QtWidgets import QDockWidget, QLabel, QVBoxLayout, QWidget


class LossCurveDock(QDockWidget):
    """Train and validation loss per epoch (pyqtgraph). :meth:`add_epoch` takes
    the core's epoch records ``{"epoch", "train_loss", "val_loss", ...}``; an
    epoch number not after the last one starts a new curve (a new run)."""

    def __init__(self, parent=None):
        super().__init__("Edifice training loss", parent)
        self.setObjectName("EdificeLossCurveDock")
        os.environ.setdefault("PYQTGRAPH_QT_LIB", "PyQt5")
        import pyqtgraph as pg

        body = QWidget(self)
        lay = QVBoxLayout(body)
        self.status = QLabel("Waiting for the first epoch…", body)
        self.plot = pg.PlotWidget(body, background="w")
        self.plot.setLabel("bottom", "epoch")
        self.plot.setLabel("left", "loss (Dice)")
        self.plot.showGrid(x=True, y=True, alpha=0.3)
        self.plot.addLegend(offset=(-10, 10))  # top right: losses fall from the top left, away from it
        self.train_curve = self.plot.plot([], [], pen=pg.mkPen("#1f77b4", width=2), symbol="o", symbolSize=5,
                                          name="train")
        self.val_curve = self.plot.plot([], [], pen=pg.mkPen("#d62728", width=2), symbol="o", symbolSize=5,
                                        name="validation")
        lay.addWidget(self.status)
        lay.addWidget(self.plot)
        self.setWidget(body)
        self.epochs: list[float] = []
        self.train: list[float] = []
        self.val: list[float] = []

    def reset(self) -> None:
        self.epochs, self.train, self.val = [], [], []
        self.train_curve.setData([], [])
        self.val_curve.setData([], [])

    def add_epoch(self, record: dict) -> None:
        epoch = float(record["epoch"])
        if self.epochs and epoch <= self.epochs[-1]:
            self.reset()
        self.epochs.append(epoch)
        self.train.append(float(record["train_loss"]))
        self.val.append(float(record["val_loss"]))
        self.train_curve.setData(self.epochs, self.train)
        self.val_curve.setData(self.epochs, self.val)
        self.status.setText(f"epoch {int(epoch)}: train {self.train[-1]:.4f}, validation {self.val[-1]:.4f}"
                            + ("  (best)" if record.get("improved") else ""))


class _Bridge(QObject):
    """Lives in the GUI thread; ``epoch`` may be emitted from any thread."""

    epoch = pyqtSignal(object)

    def __init__(self, iface):
        super().__init__()
        self.iface = iface
        self.dock: LossCurveDock | None = None

    def ensure_dock(self) -> LossCurveDock:
        """The dock, created and added to the main window on first use, shown."""
        if self.dock is None:
            parent = self.iface.mainWindow() if hasattr(self.iface, "mainWindow") else None
            self.dock = LossCurveDock(parent)
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.dock.show()
        self.dock.raise_()
        return self.dock

    @pyqtSlot(object)
    def on_epoch(self, record) -> None:
        self.ensure_dock().add_epoch(record)


_BRIDGE: _Bridge | None = None


def epoch_callback(iface):
    """A thread-safe ``epoch_callback(record)`` that plots into the dock of ``iface``."""
    global _BRIDGE
    if _BRIDGE is None:
        bridge = _Bridge(iface)
        app = QCoreApplication.instance()
        if app is not None and bridge.thread() is not app.thread():
            bridge.moveToThread(app.thread())  # created in a worker: hand it to the GUI thread
        bridge.epoch.connect(bridge.on_epoch)
        _BRIDGE = bridge
    return _BRIDGE.epoch.emit


def show_dock(iface) -> LossCurveDock:
    """Show the loss-curve dock (the plugin menu's "Training loss"), creating it when no run did yet;
    call it in the GUI thread."""
    epoch_callback(iface)
    return _BRIDGE.ensure_dock()


def unload() -> None:
    """Remove the dock (plugin unload)."""
    global _BRIDGE
    if _BRIDGE is not None and _BRIDGE.dock is not None:
        try:
            _BRIDGE.iface.removeDockWidget(_BRIDGE.dock)
        except Exception:
            pass
        _BRIDGE.dock.deleteLater()
    _BRIDGE = None
