"""The correction tools panel: mouse tools, brush class and size, track and frame operations, undo/redo."""

from __future__ import annotations

from qtpy import QtCore, QtWidgets

from .models import ReviewModel

TOOL_LABELS = {"navigate": "Select (V)", "brush": "Brush (B)", "erase": "Erase (E)", "delete": "Delete object (D)",
               "contact": "Set contact end (C)", "split": "Split track here (S)"}


class ToolsPanel(QtWidgets.QWidget):
    #: the user asked to fine-tune the network on the corrected frames (the window runs it)
    retrain_requested = QtCore.Signal()

    def __init__(self, model: ReviewModel, parent=None):
        super().__init__(parent)
        self.model = model
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)

        box = QtWidgets.QGroupBox("Mouse tool")
        bl = QtWidgets.QGridLayout(box)
        self.tool_buttons: dict[str, QtWidgets.QToolButton] = {}
        group = QtWidgets.QButtonGroup(self)
        group.setExclusive(True)
        for k, (tool, text) in enumerate(TOOL_LABELS.items()):
            b = QtWidgets.QToolButton(text=text, checkable=True)
            b.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Fixed)
            b.clicked.connect(lambda _=False, t=tool: model.set_tool(t))
            group.addButton(b)
            bl.addWidget(b, k // 2, k % 2)
            self.tool_buttons[tool] = b
        self.tool_buttons[model.tool].setChecked(True)
        lay.addWidget(box)

        brush = QtWidgets.QGroupBox("Brush")
        fl = QtWidgets.QFormLayout(brush)
        self.class_box = QtWidgets.QComboBox()
        self.class_box.addItem("reacted (2)", 2)
        self.class_box.addItem("pristine (1)", 1)
        self.class_box.setCurrentIndex(0 if model.brush_class == 2 else 1)
        self.radius_box = QtWidgets.QDoubleSpinBox(minimum=0.5, maximum=100, singleStep=0.5, suffix=" px")
        self.radius_box.setValue(model.brush_radius)
        fl.addRow("class", self.class_box)
        fl.addRow("radius", self.radius_box)
        lay.addWidget(brush)
        self.class_box.currentIndexChanged.connect(lambda k: setattr(model, "brush_class", self.class_box.itemData(k)))
        self.radius_box.valueChanged.connect(lambda v: setattr(model, "brush_radius", float(v)))

        tr = QtWidgets.QGroupBox("Tracks and frames")
        gl = QtWidgets.QGridLayout(tr)
        self.sel_label = QtWidgets.QLabel("no track selected")
        self.merge_with = QtWidgets.QSpinBox(minimum=0, maximum=10**9, prefix="with track ")
        self.merge_btn = QtWidgets.QPushButton("Merge (M)")
        self.del_track_btn = QtWidgets.QPushButton("Delete track")
        self.exclude_btn = QtWidgets.QPushButton("Exclude frame (X)")
        self.include_btn = QtWidgets.QPushButton("Include frame")
        gl.addWidget(self.sel_label, 0, 0, 1, 2)
        gl.addWidget(self.merge_with, 1, 0)
        gl.addWidget(self.merge_btn, 1, 1)
        gl.addWidget(self.del_track_btn, 2, 0)
        gl.addWidget(self.exclude_btn, 3, 0)
        gl.addWidget(self.include_btn, 3, 1)
        lay.addWidget(tr)
        self.merge_btn.clicked.connect(self.merge)
        self.del_track_btn.clicked.connect(self.delete_track)
        self.exclude_btn.clicked.connect(lambda: model.exclude_frames(excluded=True))
        self.include_btn.clicked.connect(lambda: model.exclude_frames(excluded=False))

        ph = QtWidgets.QGroupBox("Diffraction frame")
        pl = QtWidgets.QHBoxLayout(ph)
        self.phase_box = QtWidgets.QComboBox()
        self.relabel_btn = QtWidgets.QPushButton("Relabel phase")
        pl.addWidget(self.phase_box, 1)
        pl.addWidget(self.relabel_btn)
        lay.addWidget(ph)
        self.relabel_btn.clicked.connect(self.relabel)

        cal = QtWidgets.QGroupBox("Calibration")
        cl = QtWidgets.QFormLayout(cal)
        self.nm_box = QtWidgets.QDoubleSpinBox(decimals=5, minimum=1e-5, maximum=1e4, suffix=" nm/px")
        self.fps_box = QtWidgets.QDoubleSpinBox(decimals=4, minimum=1e-4, maximum=1e6, suffix=" fps")
        self.cal_btn = QtWidgets.QPushButton("Apply calibration")
        cl.addRow("pixel", self.nm_box)
        cl.addRow("rate", self.fps_box)
        cl.addRow(self.cal_btn)
        lay.addWidget(cal)
        self.cal_btn.clicked.connect(self.apply_calibration)

        ur = QtWidgets.QHBoxLayout()
        self.undo_btn = QtWidgets.QPushButton("Undo (Ctrl+Z)")
        self.redo_btn = QtWidgets.QPushButton("Redo (Ctrl+Shift+Z)")
        ur.addWidget(self.undo_btn)
        ur.addWidget(self.redo_btn)
        lay.addLayout(ur)
        self.undo_btn.clicked.connect(model.undo)
        self.redo_btn.clicked.connect(model.redo)
        net = QtWidgets.QGroupBox("Network")
        nl = QtWidgets.QVBoxLayout(net)
        self.corrected_label = QtWidgets.QLabel()
        self.corrected_label.setWordWrap(True)
        self.retrain_btn = QtWidgets.QPushButton("Retrain on corrected frames…")
        self.retrain_btn.setToolTip("Fine-tune the segmentation network on the frames corrected by hand "
                                    "(mixed with synthetic sessions), then reprocess this session with it")
        nl.addWidget(self.corrected_label)
        nl.addWidget(self.retrain_btn)
        lay.addWidget(net)
        self.retrain_btn.clicked.connect(self.retrain_requested.emit)
        self.journal_label = QtWidgets.QLabel()
        self.journal_label.setWordWrap(True)
        lay.addWidget(self.journal_label)
        lay.addStretch(1)

        model.tool_changed.connect(lambda t: self.tool_buttons[t].setChecked(True))
        model.selection_changed.connect(self._selection)
        model.tables_changed.connect(self._tables)
        model.frame_changed.connect(lambda i: self._frame())
        self._tables()

    def _selection(self, tid) -> None:
        r = self.model.track_row(tid)
        self.sel_label.setText("no track selected" if tid is None else
                               f"track {tid}" + (f" ({r['kind']}, frames {r['first_frame']}–{r['last_frame']})" if r else ""))

    def _frame(self) -> None:
        diff = self.model.mode() == "diffraction"
        self.relabel_btn.setEnabled(diff)
        self.phase_box.setEnabled(diff)

    def _tables(self) -> None:
        m = self.model
        names = m.phase_names()
        if [self.phase_box.itemText(k) for k in range(self.phase_box.count())] != names:
            self.phase_box.clear()
            self.phase_box.addItems(names)
        self.nm_box.setValue(m.nm_per_px if m.nm_per_px == m.nm_per_px else 1.0)
        self.fps_box.setValue(m.fps if m.fps == m.fps else 1.0)
        # what the boxes show (rounded to their decimals; 1 where the analysis knows no value)
        self._shown = (self.nm_box.value(), self.fps_box.value())
        n = sum(1 for _ in m.store.corrections())
        self.undo_btn.setEnabled(m.can_undo())
        self.redo_btn.setEnabled(m.can_redo())
        self.journal_label.setText(f"journal: {n} entries in corrections.jsonl")
        k = len(m.corrected_frames())
        self.corrected_label.setText(f"{k} frame{'s' if k != 1 else ''} corrected by hand"
                                     + ("" if k else " (paint or erase masks to teach the network)"))
        self.retrain_btn.setEnabled(k > 0)
        self._selection(m.selected)
        self._frame()

    def merge(self) -> None:
        m = self.model
        other = self.merge_with.value()
        if m.selected is None or not other:
            m.message.emit("select a track, type the other track's id, then Merge")
            return
        m.merge_tracks(m.selected, other)

    def delete_track(self) -> None:
        if self.model.selected is None:
            self.model.message.emit("select a track first")
            return
        tid = self.model.selected
        self.model.select(None)
        self.model.delete_track(tid)

    def relabel(self) -> None:
        self.model.relabel_phase(self.phase_box.currentText())

    def apply_calibration(self) -> None:
        m = self.model
        kw = {}
        # only what the user changed: against what the boxes show (an unknown value shows 1 and is set by
        # any other; a value shown rounded is not re-sent as an edit)
        nm_shown, fps_shown = getattr(self, "_shown", (m.nm_per_px, m.fps))
        if not abs(self.nm_box.value() - nm_shown) <= 1e-9:
            kw["nm_per_px"] = self.nm_box.value()
        if not abs(self.fps_box.value() - fps_shown) <= 1e-9:
            kw["fps"] = self.fps_box.value()
        if kw:
            m.edit_calibration(**kw)
        else:
            m.message.emit("calibration unchanged")
