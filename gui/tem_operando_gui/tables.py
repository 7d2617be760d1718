"""The tracks table (kinetics per object) and the review queue."""

from __future__ import annotations

import math

import pandas as pd
from qtpy import QtCore, QtGui, QtWidgets

from .models import ReviewModel
from .overlays import track_color

TRACK_COLUMNS = [("track_id", "track"), ("kind", "kind"), ("first_frame", "first"), ("last_frame", "last"),
                 ("width0_nm", "w0 nm"), ("width1_nm", "w1 nm"), ("swelling_rate_nm_s", "swell nm/s"),
                 ("volume_expansion_pct", "ΔV %"), ("front_velocity_nm_s", "front nm/s"),
                 ("rate_law", "law"), ("n_steps", "steps")]


class DataFrameModel(QtCore.QAbstractTableModel):
    """A read-only Qt view of a DataFrame (selected columns, compact numbers)."""

    def __init__(self, columns: list[tuple[str, str]]):
        super().__init__()
        self.columns = columns
        self.df = pd.DataFrame()

    def set_frame(self, df: pd.DataFrame) -> None:
        self.beginResetModel()
        self.df = df.reset_index(drop=True)
        self.endResetModel()

    def rowCount(self, parent=QtCore.QModelIndex()):
        return 0 if parent.isValid() else len(self.df)

    def columnCount(self, parent=QtCore.QModelIndex()):
        return 0 if parent.isValid() else len(self.columns)

    def data(self, index, role=QtCore.Qt.ItemDataRole.DisplayRole):
        col = self.columns[index.column()][0]
        if col not in self.df:
            return None
        v = self.df.iloc[index.row()][col]
        if role == QtCore.Qt.ItemDataRole.DisplayRole:
            if isinstance(v, float):
                return "" if math.isnan(v) else f"{v:.4g}"
            return "" if v is None else str(v)
        if role == QtCore.Qt.ItemDataRole.ForegroundRole and col == "track_id":
            return QtGui.QBrush(QtGui.QColor(*track_color(int(v))))
        return None

    def headerData(self, section, orientation, role=QtCore.Qt.ItemDataRole.DisplayRole):
        if role == QtCore.Qt.ItemDataRole.DisplayRole and orientation == QtCore.Qt.Orientation.Horizontal:
            return self.columns[section][1]
        return None


class TracksTable(QtWidgets.QTableView):
    """tracks.csv; selecting a row selects the track and jumps to its first frame."""

    def __init__(self, model: ReviewModel, parent=None):
        super().__init__(parent)
        self.model_ = model
        self.dfm = DataFrameModel(TRACK_COLUMNS)
        self.setModel(self.dfm)
        self.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.verticalHeader().hide()
        self.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.clicked.connect(self._clicked)
        model.tables_changed.connect(self.reload)
        model.selection_changed.connect(self._select_row)
        self.reload()

    def reload(self) -> None:
        self.dfm.set_frame(self.model_.tables["tracks"])
        self._select_row(self.model_.selected)

    def _clicked(self, index) -> None:
        row = self.dfm.df.iloc[index.row()]
        m = self.model_
        m.select(int(row["track_id"]))
        if not (row["first_frame"] <= m.current <= row["last_frame"]):
            m.set_frame(int(row["first_frame"]))

    def _select_row(self, tid) -> None:
        df = self.dfm.df
        if tid is None or df.empty:
            self.clearSelection()
            return
        rows = df.index[df["track_id"] == tid]
        if len(rows):
            self.selectRow(int(rows[0]))


class ReviewQueue(QtWidgets.QWidget):
    """Frames worth a look (low confidence, abrupt changes); Next/Previous step through them."""

    def __init__(self, model: ReviewModel, parent=None):
        super().__init__(parent)
        self.model = model
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.list = QtWidgets.QListWidget()
        bar = QtWidgets.QHBoxLayout()
        self.prev_btn = QtWidgets.QPushButton("◀ Prev (P)")
        self.next_btn = QtWidgets.QPushButton("Next (N) ▶")
        bar.addWidget(self.prev_btn)
        bar.addWidget(self.next_btn)
        lay.addWidget(self.list, 1)
        lay.addLayout(bar)
        self.queue = pd.DataFrame()
        self.list.currentRowChanged.connect(self._go)
        self.next_btn.clicked.connect(lambda: self.step(1))
        self.prev_btn.clicked.connect(lambda: self.step(-1))
        model.tables_changed.connect(self.reload)
        self.reload()

    def reload(self) -> None:
        q = self.model.review_queue()
        self.queue = q.sort_values("frame").reset_index(drop=True) if not q.empty else \
            pd.DataFrame(columns=["frame", "time_s", "reason", "score"])
        self.list.blockSignals(True)
        self.list.clear()
        for r in self.queue.itertuples(index=False):
            self.list.addItem(f"frame {r.frame:>5}  t={r.time_s:7.2f} s  {r.reason}")
        self.list.blockSignals(False)

    def _go(self, row: int) -> None:
        if 0 <= row < len(self.queue):
            self.model.set_frame(int(self.queue["frame"].iloc[row]))

    def step(self, d: int) -> None:
        if self.queue.empty:
            self.model.message.emit("review queue is empty")
            return
        fr = self.queue["frame"].to_numpy()
        cur = self.model.current
        cand = fr[fr > cur] if d > 0 else fr[fr < cur]
        if cand.size == 0:
            self.model.message.emit("end of the review queue")
            return
        target = int(cand.min() if d > 0 else cand.max())
        self.list.setCurrentRow(int((fr == target).nonzero()[0][0]))
