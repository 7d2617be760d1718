"""The main window: video + transport in the centre, linked plots, tracks, review queue and tools in docks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from qtpy import QtCore, QtGui, QtWidgets

from .models import ReviewModel

ORG, APP = "tem-operando", "tem-operando-gui"


def is_results_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "summary.json").is_file()


def default_results_dir(recording: str | os.PathLike) -> Path:
    p = Path(recording)
    return p.with_name(p.stem + "_results")


def prewarm() -> None:
    """Import the recording readers in the background (about a second) while Qt starts."""
    import threading

    if "tem_operando.io" not in sys.modules:
        threading.Thread(target=lambda: __import__("tem_operando.io"), daemon=True).start()


class _Invoker(QtCore.QObject):
    """Runs callables posted from any thread in the thread this object lives in (the GUI thread)."""

    call = QtCore.Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.call.connect(self._run, QtCore.Qt.ConnectionType.QueuedConnection)

    def _run(self, fn) -> None:
        fn()

    def post(self, fn) -> None:
        self.call.emit(fn)


_GC = None


def gc_in_gui_thread() -> None:
    """Run Python's cyclic garbage collector only in the Qt GUI thread (pyqtgraph's
    ``GarbageCollector``: automatic collection off, a 1 s timer in this thread collects instead).

    A collection that a background thread starts (the journal replay, the analysis or training
    worker) and that frees a closed window's Qt objects runs their C++ destructors in that thread;
    a destructor takes a Qt lock, then waits for the GIL, while the GUI thread holds the GIL and
    waits for the same lock: the app hangs (seen in the test suite). Call from the GUI thread;
    calling again does nothing.
    """
    global _GC
    if _GC is None:
        from pyqtgraph.util.garbage_collector import GarbageCollector

        _GC = GarbageCollector(interval=1.0)


def stop_gc_in_gui_thread() -> None:
    """Undo :func:`gc_in_gui_thread`: collect now, in the calling (GUI) thread, and turn automatic
    collection back on (tests that go on without an event loop)."""
    import gc

    global _GC
    if _GC is not None:
        _GC.timer.stop()
        _GC = None
    gc.collect()
    gc.enable()


class MainWindow(QtWidgets.QMainWindow):
    """Review-and-correct window. ``MainWindow(path)`` opens a results folder or a recording."""

    def __init__(self, path: str | os.PathLike | None = None, settings: QtCore.QSettings | None = None,
                 ask: bool = True):
        prewarm()
        gc_in_gui_thread()
        super().__init__()
        self.settings = settings or QtCore.QSettings(ORG, APP)
        self.ask = ask
        self.model: ReviewModel | None = None
        self.worker = None
        self._invoker = _Invoker(self)
        self.replay_label = QtWidgets.QLabel("")
        self.setWindowTitle("tem-operando")
        self.resize(1500, 920)
        geo = self.settings.value("geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        self.progress = QtWidgets.QProgressBar(maximumWidth=260)
        self.progress.hide()
        self.statusBar().addPermanentWidget(self.replay_label)
        self.statusBar().addPermanentWidget(self.progress)
        self.cancel_btn = QtWidgets.QPushButton("Cancel training")
        self.cancel_btn.clicked.connect(lambda: self.worker is not None and hasattr(self.worker, "cancel")
                                        and self.worker.cancel())
        self.cancel_btn.hide()
        self.statusBar().addPermanentWidget(self.cancel_btn)
        self._docks: list[QtWidgets.QDockWidget] = []
        self._make_menus()
        placeholder = QtWidgets.QLabel("Open a results folder (Ctrl+O) or a recording (Ctrl+Shift+O)")
        placeholder.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.setCentralWidget(placeholder)
        if path is not None:
            self.open_path(path)

    # -- menus and shortcuts -----------------------------------------------------------------------
    def _act(self, menu, text, slot, shortcut=None, ctx=QtCore.Qt.ShortcutContext.WindowShortcut):
        a = QtGui.QAction(text, self)
        if shortcut:
            a.setShortcut(QtGui.QKeySequence(shortcut))
            a.setShortcutContext(ctx)
        a.triggered.connect(slot)
        (menu.addAction(a) if menu is not None else self.addAction(a))
        return a

    def _make_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self._act(f, "Open results folder…", self.open_dialog, "Ctrl+O")
        self._act(f, "Open recording (analyse)…", self.open_recording_dialog, "Ctrl+Shift+O")
        ex = f.addMenu("Export")
        self._act(ex, "Annotation set for training…", self.export_annotations)
        self._act(ex, "Tables as CSV…", self.export_tables)
        self._act(ex, "View as PNG…", self.export_png)
        self._act(ex, "Overlay movie (MP4/GIF)…", self.export_movie)
        f.addSeparator()
        self._act(f, "Quit", self.close, "Ctrl+Q")
        e = mb.addMenu("&Edit")
        self._act(e, "Undo", lambda: self.model and self.model.undo(), "Ctrl+Z")
        self._act(e, "Redo", lambda: self.model and self.model.redo(), "Ctrl+Shift+Z")
        self._act(e, "Redo (Ctrl+Y)", lambda: self.model and self.model.redo(), "Ctrl+Y")
        t = mb.addMenu("&Tools")
        for key, tool in (("V", "navigate"), ("B", "brush"), ("E", "erase"), ("D", "delete"), ("C", "contact"),
                          ("S", "split")):
            self._act(t, tool.capitalize(), lambda _=False, tl=tool: self.model and self.model.set_tool(tl), key)
        self._act(t, "Exclude current frame", lambda: self.model and self.model.exclude_frames(), "X")
        self._act(t, "Merge selected track…", lambda: self.tools and self.tools.merge(), "M")
        self._act(t, "Larger brush", lambda: self._brush(1.25), "]")
        self._act(t, "Smaller brush", lambda: self._brush(0.8), "[")
        self.view_menu = mb.addMenu("&View")
        self._act(self.view_menu, "Auto contrast", lambda: self.video and self.video.set_auto_levels(True), "A")
        p = mb.addMenu("&Play")
        self._act(p, "Play / pause", self.toggle_play, "Space")
        self._act(p, "Next frame", lambda: self.model and self.model.step(1), "Right")
        self._act(p, "Previous frame", lambda: self.model and self.model.step(-1), "Left")
        self._act(p, "10 frames on", lambda: self.model and self.model.step(10), "Shift+Right")
        self._act(p, "10 frames back", lambda: self.model and self.model.step(-10), "Shift+Left")
        self._act(p, "First frame", lambda: self.model and self.model.set_frame(0), "Home")
        self._act(p, "Last frame", lambda: self.model and self.model.set_frame(self.model.n_frames - 1), "End")
        self._act(p, "Next frame to review", lambda: self.queue and self.queue.step(1), "N")
        self._act(p, "Previous frame to review", lambda: self.queue and self.queue.step(-1), "P")
        self.video = self.tools = self.queue = None

    def _brush(self, f: float) -> None:
        if self.tools:
            self.tools.radius_box.setValue(self.tools.radius_box.value() * f)

    def toggle_play(self) -> None:
        if self.model:
            self.model.set_playing(not self.model.playing)

    # -- opening ----------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        d = QtWidgets.QFileDialog.getExistingDirectory(self, "Open results folder", self.settings.value("last_dir", ""))
        if d:
            self.open_path(d)

    def open_recording_dialog(self) -> None:
        f, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open recording", self.settings.value("last_dir", ""))
        if f:
            self.open_path(f)

    def open_path(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if is_results_folder(path):
            self.open_results(path)
            return
        out = default_results_dir(path)
        if is_results_folder(out) and (out / "summary.json").read_text().find('"complete"') >= 0:
            self.open_results(out)
            return
        if self.ask:
            r = QtWidgets.QMessageBox.question(self, "Analyse recording?",
                                               f"{path.name} has no results yet.\nAnalyse it into {out}?")
            if r != QtWidgets.QMessageBox.StandardButton.Yes:
                return
        self.analyse(path, out)

    def analyse(self, recording: str | os.PathLike, out: str | os.PathLike, model: str | None = "baseline",
                parameters: dict | None = None) -> None:
        """Analyse in a worker thread; the window stays responsive and opens the results when done.
        ``parameters``: an earlier run's (its summary's), kept except for the model."""
        from .worker import AnalyzeWorker

        self.worker = AnalyzeWorker(str(recording), str(out), model=model, parent=self, parameters=parameters)
        self.progress.setRange(0, 0)
        self.progress.setFormat("analysing %v/%m frames")
        self.progress.show()
        self.worker.progress.connect(self._progress)
        self.worker.done.connect(self._analysed)
        self.worker.failed.connect(lambda msg: (self.progress.hide(),
                                                QtWidgets.QMessageBox.critical(self, "Analysis failed", msg)
                                                if self.ask else self.statusBar().showMessage(msg)))
        self.statusBar().showMessage(f"analysing {recording} …")
        self.worker.start()

    def _progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def _analysed(self, out: str) -> None:
        self.progress.hide()
        self.open_results(out)

    def open_results(self, folder: str | os.PathLike) -> None:
        from .plots import PlotsPanel
        from .tables import ReviewQueue, TracksTable
        from .tools import ToolsPanel
        from .transport import Transport
        from .video import OVERLAYS, VideoView

        if self.model is not None:
            self.model.set_playing(False)
            self.model.close()
        for d in self._docks:
            self.removeDockWidget(d)
            d.deleteLater()
        self._docks = []
        m = self.model = ReviewModel(folder, post=self._invoker.post)
        m.busy_changed.connect(lambda on: self.replay_label.setText("applying corrections …" if on else ""))
        self.settings.setValue("last_dir", str(Path(folder).parent))
        self.setWindowTitle(f"tem-operando — {Path(folder).name}")
        m.message.connect(lambda s: self.statusBar().showMessage(s, 5000))
        m.brush_class = int(self.settings.value("brush_class", 2))
        m.brush_radius = float(self.settings.value("brush_radius", 4.0))

        centre = QtWidgets.QWidget()
        v = QtWidgets.QVBoxLayout(centre)
        v.setContentsMargins(0, 0, 0, 0)
        self.video = VideoView(m)
        self.transport = Transport(m)
        self.transport.set_speed(float(self.settings.value("speed", 1.0)))
        ov = QtWidgets.QHBoxLayout()
        ov.addWidget(QtWidgets.QLabel("Overlays:"))
        self.overlay_boxes = {}
        for name in OVERLAYS:
            cb = QtWidgets.QCheckBox(name)
            on = self.settings.value(f"overlay/{name}", self.video.show[name])
            on = on in (True, "true", "1", 1)
            cb.setChecked(on)
            self.video.show[name] = on
            cb.toggled.connect(lambda s, n=name: (self.video.set_overlay(n, s), self.settings.setValue(f"overlay/{n}", s)))
            ov.addWidget(cb)
            self.overlay_boxes[name] = cb
        ov.addStretch(1)
        v.addLayout(ov)
        v.addWidget(self.video, 1)
        v.addWidget(self.transport)
        self.plots = PlotsPanel(m)
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        split.addWidget(centre)
        split.addWidget(self.plots)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        self.setCentralWidget(split)
        split.setSizes([900, 600])

        self.tools = ToolsPanel(m)
        self.tools.retrain_requested.connect(self.retrain_dialog)
        self.tracks = TracksTable(m)
        self.queue = ReviewQueue(m)
        for title, w, area in (("Correct", self.tools, QtCore.Qt.DockWidgetArea.LeftDockWidgetArea),
                               ("Tracks", self.tracks, QtCore.Qt.DockWidgetArea.BottomDockWidgetArea),
                               ("Review queue", self.queue, QtCore.Qt.DockWidgetArea.BottomDockWidgetArea)):
            d = QtWidgets.QDockWidget(title, self)
            d.setObjectName(title)
            d.setWidget(w)
            self.addDockWidget(area, d)
            self._docks.append(d)
        self.tools.class_box.setCurrentIndex(0 if m.brush_class == 2 else 1)
        self.tools.radius_box.setValue(m.brush_radius)
        state = self.settings.value("state")
        if state is not None:
            self.restoreState(state)
        m.tool_changed.connect(lambda t: self.statusBar().showMessage(f"tool: {t}", 3000))
        m.journal_changed.connect(lambda: self.statusBar().showMessage("correction journaled", 3000))
        n = len(m.tables["tracks"])
        self.statusBar().showMessage(f"{folder}: {m.n_frames} frames, {n} tracks", 5000)

    # -- retraining ---------------------------------------------------------------------------------
    def retrain_dialog(self) -> None:
        """Ask for the new model's name, then :meth:`retrain` (the button in the Correct dock)."""
        if not self._need_model():
            return
        if not self.model.corrected_frames():
            self.statusBar().showMessage("correct some frames first: the network learns from them", 5000)
            return
        name = f"{Path(self.model.store.folder).name}-tuned"
        if self.ask:
            name, ok = QtWidgets.QInputDialog.getText(
                self, "Retrain the network",
                f"Fine-tune on the {len(self.model.corrected_frames())} corrected frames (a few minutes on a CPU)."
                "\nName of the new model:", text=name)
            if not ok or not name.strip():
                return
        self.retrain(name.strip())

    def retrain(self, name: str, options=None, reprocess: bool = True) -> None:
        """Fine-tune the network on this folder's corrected frames in a worker thread.

        The model goes to the user model folder (``tem-operando models list`` shows it). When it is
        written and ``reprocess`` is true, the session is analysed again with it into the same
        folder; the journal stays, so every hand correction wins over the new predictions.
        """
        from tem_operando.segment.infer import user_models_dir

        from .worker import RetrainWorker

        if not self._need_model() or (self.worker is not None and self.worker.isRunning()):
            self.statusBar().showMessage("a job is already running", 4000)
            return
        out = user_models_dir() / (name if name.endswith(".pt") else name + ".pt")
        self.model.wait_idle()  # the corrected masks on disk include the last stroke
        self._reprocess_after = reprocess
        self._retrain_folder = str(self.model.store.folder)
        self.worker = RetrainWorker([self._retrain_folder], str(out), options, parent=self)
        self.progress.setRange(0, 0)
        self.progress.setFormat("training: step %v/%m")
        self.progress.show()
        self.cancel_btn.show()
        self.worker.progress.connect(self._progress)
        self.worker.log.connect(lambda line: self.statusBar().showMessage(line[:200]))
        self.worker.done.connect(self._retrained)
        self.worker.cancelled.connect(lambda msg: self._retrain_ended(msg))
        self.worker.failed.connect(lambda msg: self._retrain_ended(msg, error=True))
        self.statusBar().showMessage(f"fine-tuning {out.name} on {len(self.model.corrected_frames())} corrected frames …")
        self.worker.start()

    def _retrain_ended(self, msg: str, error: bool = False) -> None:
        self.progress.hide()
        self.cancel_btn.hide()
        if error and self.ask:
            QtWidgets.QMessageBox.critical(self, "Retraining failed", msg)
        self.statusBar().showMessage(msg, 10000)

    def _retrained(self, path: str) -> None:
        self._retrain_ended(f"wrote {path} and its model card")
        self.last_model = path
        if not self._reprocess_after:
            return
        folder = self._retrain_folder
        recording = (self.model.summary if self.model is not None else {}).get("input")
        if not recording or not Path(recording).exists():
            self.statusBar().showMessage(f"model written to {path}; the recording {recording} is gone, so the "
                                         "session cannot be reprocessed here", 10000)
            return
        if self.ask:
            r = QtWidgets.QMessageBox.question(self, "Reprocess?", f"Reprocess {Path(recording).name} with the new "
                                               f"model {Path(path).stem}?\nYour corrections stay applied.")
            if r != QtWidgets.QMessageBox.StandardButton.Yes:
                return
        self.reprocess(path, recording, folder)

    def reprocess(self, model: str, recording: str | None = None, folder: str | None = None) -> None:
        """Analyse the open session again with ``model`` into its own folder (corrections are kept)."""
        if not self._need_model():
            return
        folder = folder or str(self.model.store.folder)
        recording = recording or self.model.summary.get("input")
        parameters = self.model.summary.get("parameters")  # calibration, phases, log... of the first analysis
        self.model.set_playing(False)
        self.model.close()
        self.model = None
        for d in self._docks:
            self.removeDockWidget(d)
            d.deleteLater()
        self._docks = []
        self.video = self.tools = self.queue = None
        self.setCentralWidget(QtWidgets.QLabel(f"reprocessing with {Path(model).stem} …"))
        self.analyse(recording, folder, model=model, parameters=parameters)

    # -- exports ------------------------------------------------------------------------------------
    def _need_model(self) -> bool:
        if self.model is None:
            self.statusBar().showMessage("open a results folder first", 4000)
            return False
        return True

    def export_annotations(self) -> None:
        from .export import export_annotations

        if not self._need_model():
            return
        d = QtWidgets.QFileDialog.getExistingDirectory(self, "Annotation set folder")
        if d:
            try:
                p = export_annotations(self.model, d)
                self.statusBar().showMessage(f"annotation set written to {p}", 5000)
            except Exception as exc:  # noqa: BLE001
                QtWidgets.QMessageBox.warning(self, "Export", str(exc))

    def export_tables(self) -> None:
        from .export import export_tables

        if self._need_model():
            d = QtWidgets.QFileDialog.getExistingDirectory(self, "Folder for the CSV tables")
            if d:
                export_tables(self.model, d)

    def export_png(self) -> None:
        from .export import export_png

        if self._need_model():
            f, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save view", "view.png", "PNG (*.png)")
            if f:
                export_png(self.video, f)

    def export_movie(self) -> None:
        from .export import export_movie

        if not self._need_model():
            return
        f, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save movie", "overlay.mp4", "Movie (*.mp4 *.gif)")
        if f:
            self.progress.show()
            export_movie(self.model, f, fps=min(self.model.fps * self.model.speed, 30),
                         progress=lambda d, n: (self._progress(d, n), QtWidgets.QApplication.processEvents()))
            self.progress.hide()

    # -- settings -----------------------------------------------------------------------------------
    def closeEvent(self, ev):
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("state", self.saveState())
        if self.model is not None:
            self.settings.setValue("brush_class", self.model.brush_class)
            self.settings.setValue("brush_radius", self.model.brush_radius)
            self.settings.setValue("speed", self.model.speed)
            self.model.set_playing(False)
            self.model.close()
        if self.worker is not None and self.worker.isRunning():
            self.worker.wait(100)
        super().closeEvent(ev)


def main(argv: list[str] | None = None) -> int:
    """Start the app: ``main(["path/to/results"])``."""
    prewarm()
    import pyqtgraph as pg

    argv = list(sys.argv[1:] if argv is None else argv)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0]])
    app.setOrganizationName(ORG)
    app.setApplicationName(APP)
    pg.setConfigOptions(antialias=False, imageAxisOrder="row-major")
    win = MainWindow(argv[0] if argv else None)
    win.show()
    return app.exec()
