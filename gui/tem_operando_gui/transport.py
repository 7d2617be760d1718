"""Play / pause / step / speed / slider / jump to time, driving :class:`ReviewModel`'s frame."""

from __future__ import annotations

import time

from qtpy import QtCore, QtWidgets

from .models import ReviewModel

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0)


class Transport(QtWidgets.QWidget):
    def __init__(self, model: ReviewModel, parent=None):
        super().__init__(parent)
        self.model = model
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        st = self.style()
        SP = QtWidgets.QStyle.StandardPixmap
        self.play_btn = QtWidgets.QToolButton(icon=st.standardIcon(SP.SP_MediaPlay), toolTip="Play / pause (Space)")
        self.prev_btn = QtWidgets.QToolButton(icon=st.standardIcon(SP.SP_MediaSeekBackward), toolTip="Previous frame (←)")
        self.next_btn = QtWidgets.QToolButton(icon=st.standardIcon(SP.SP_MediaSeekForward), toolTip="Next frame (→)")
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.frame_box = QtWidgets.QSpinBox(toolTip="Frame")
        self.time_box = QtWidgets.QLineEdit(placeholderText="jump to t (s)", maximumWidth=110)
        self.speed_box = QtWidgets.QComboBox(toolTip="Playback speed")
        for s in SPEEDS:
            self.speed_box.addItem(f"{s:g}×", s)
        self.speed_box.setCurrentIndex(SPEEDS.index(1.0))
        for w in (self.prev_btn, self.play_btn, self.next_btn):
            lay.addWidget(w)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.frame_box)
        lay.addWidget(self.time_box)
        lay.addWidget(self.speed_box)

        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self._tick)
        self._t_last = 0.0
        self._acc = 0.0
        self.play_btn.clicked.connect(lambda: model.set_playing(not model.playing))
        self.prev_btn.clicked.connect(lambda: model.step(-1))
        self.next_btn.clicked.connect(lambda: model.step(1))
        self.slider.valueChanged.connect(model.set_frame)
        self.frame_box.valueChanged.connect(model.set_frame)
        self.time_box.returnPressed.connect(self._jump)
        self.speed_box.currentIndexChanged.connect(lambda k: setattr(model, "speed", SPEEDS[k]))
        model.frame_changed.connect(self._sync)
        model.playing_changed.connect(self._playing)
        model.tables_changed.connect(self._ranges)
        self._ranges()

    def _ranges(self) -> None:
        n = max(self.model.n_frames - 1, 0)
        for w in (self.slider, self.frame_box):
            w.blockSignals(True)
            w.setRange(0, n)
            w.setValue(self.model.current)
            w.blockSignals(False)

    def _sync(self, i: int) -> None:
        for w in (self.slider, self.frame_box):
            if w.value() != i:
                w.blockSignals(True)
                w.setValue(i)
                w.blockSignals(False)

    def _jump(self) -> None:
        try:
            self.model.jump_to_time(float(self.time_box.text()))
        except ValueError:
            self.model.message.emit(f"not a time: {self.time_box.text()!r}")

    def _playing(self, on: bool) -> None:
        SP = QtWidgets.QStyle.StandardPixmap
        self.play_btn.setIcon(self.style().standardIcon(SP.SP_MediaPause if on else SP.SP_MediaPlay))
        if on:
            self._t_last = time.perf_counter()
            self._acc = 0.0
            self.timer.start(int(1000 / 30))
        else:
            self.timer.stop()

    def set_speed(self, speed: float) -> None:
        k = min(range(len(SPEEDS)), key=lambda j: abs(SPEEDS[j] - speed))
        self.speed_box.setCurrentIndex(k)

    def _tick(self) -> None:
        """Advance by recording time × speed (frames are skipped when the screen cannot keep up)."""
        now = time.perf_counter()
        self._acc += (now - self._t_last) * self.model.fps * self.model.speed
        self._t_last = now
        n = int(self._acc)
        if n >= 1:
            self._acc -= n
            if self.model.current + n >= self.model.n_frames:
                self.model.set_frame(self.model.n_frames - 1)
                self.model.set_playing(False)
            else:
                self.model.step(n)
