"""The video view: the frame, its overlays, contrast, and the mouse tools (brush, erase, click tools)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from qtpy import QtCore, QtWidgets

from .models import ReviewModel, finite
from .overlays import class_overlay, outline_overlay, track_color

OVERLAYS = ("masks", "outlines", "ids", "trails", "axes", "scale bar", "time")


class _FrameItem(pg.ImageItem):
    """The frame's ImageItem: forwards drags (brush strokes) and clicks to the view."""

    def __init__(self, view: VideoView):
        super().__init__(axisOrder="row-major")
        self._view = view

    def mouseDragEvent(self, ev):
        if self._view.model.tool not in ("brush", "erase") or ev.button() != QtCore.Qt.MouseButton.LeftButton:
            ev.ignore()
            return
        ev.accept()
        p = ev.pos()
        if ev.isStart():
            self._view.stroke_start(p.x(), p.y())
        self._view.stroke_add(p.x(), p.y())
        if ev.isFinish():
            self._view.stroke_finish()

    def mouseClickEvent(self, ev):
        if ev.button() != QtCore.Qt.MouseButton.LeftButton:
            ev.ignore()
            return
        ev.accept()
        p = ev.pos()
        self._view.clicked(p.x(), p.y())


class ContrastControls(QtWidgets.QWidget):
    """Display levels: percentiles of each frame (auto) or frozen at the current levels."""

    def __init__(self, view: VideoView):
        super().__init__()
        self.view = view
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(2, 0, 2, 0)
        self.auto = QtWidgets.QCheckBox("auto contrast per frame", checked=True)
        self.lo = QtWidgets.QDoubleSpinBox(minimum=0, maximum=50, value=0.5, singleStep=0.5, suffix=" %", prefix="black ")
        self.hi = QtWidgets.QDoubleSpinBox(minimum=50, maximum=100, value=99.5, singleStep=0.5, suffix=" %",
                                           prefix="white ")
        for w in (QtWidgets.QLabel("Contrast:"), self.lo, self.hi, self.auto):
            lay.addWidget(w)
        lay.addStretch(1)
        self.auto.toggled.connect(lambda on: view.refresh())
        self.lo.valueChanged.connect(self._changed)
        self.hi.valueChanged.connect(self._changed)

    def _changed(self, *_):
        self.view._levels = None  # recompute from the new percentiles, even when frozen
        self.view.refresh()


class VideoView(QtWidgets.QWidget):
    """Frame with overlays. Takes a :class:`ReviewModel`; redraws on its ``frame_changed``."""

    def __init__(self, model: ReviewModel, parent=None):
        super().__init__(parent)
        self.model = model
        self.show = {k: True for k in OVERLAYS}
        self.show["trails"] = False
        self._stroke: list[tuple[float, float]] = []
        self._levels: tuple[float, float] | None = None
        self._geo_cache: dict[tuple, object] = {}

        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.glw = pg.GraphicsLayoutWidget()
        self.vb = self.glw.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.image = _FrameItem(self)
        self.masks_item = pg.ImageItem(axisOrder="row-major")
        self.outline_item = pg.ImageItem(axisOrder="row-major")
        for it in (self.image, self.masks_item, self.outline_item):
            self.vb.addItem(it)
        self.masks_item.setZValue(1)
        self.outline_item.setZValue(2)
        self.trails = pg.PlotDataItem(connect="finite", pen=pg.mkPen((255, 255, 0, 180), width=1.5))
        self.axes = pg.PlotDataItem(connect="pairs", pen=pg.mkPen((0, 255, 120), width=2,
                                                                  style=QtCore.Qt.PenStyle.DashLine))
        self.front_pts = pg.ScatterPlotItem(symbol="d", size=12, brush=pg.mkBrush(255, 40, 40),
                                            pen=pg.mkPen("w"))
        self.contact_pts = pg.ScatterPlotItem(symbol="s", size=9, brush=pg.mkBrush(0, 200, 255), pen=pg.mkPen("w"))
        self.stroke_item = pg.PlotDataItem(pen=pg.mkPen((255, 255, 0, 150), width=4))
        for z, it in enumerate((self.trails, self.axes, self.front_pts, self.contact_pts, self.stroke_item), 3):
            it.setZValue(z)
            self.vb.addItem(it)
        self.id_items: list[pg.TextItem] = []
        self.time_text = pg.TextItem(color="w", anchor=(0, 0), fill=pg.mkBrush(0, 0, 0, 140))
        self.time_text.setParentItem(self.vb)
        self.time_text.setPos(6, 4)
        self.scale_bar = pg.ScaleBar(size=10, suffix="nm") if hasattr(pg, "ScaleBar") else None
        if self.scale_bar is not None:
            self.scale_bar.setParentItem(self.vb)
            self.scale_bar.anchor((1, 1), (1, 1), offset=(-20, -20))
        self.contrast = ContrastControls(self)
        outer = QtWidgets.QVBoxLayout()
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.glw, 1)
        outer.addWidget(self.contrast)
        lay.addLayout(outer)

        self.first_paint_s: float | None = None  # perf_counter() of the first frame painted (benchmarks)
        self.glw.viewport().installEventFilter(self)
        model.frame_changed.connect(lambda i: self.refresh())
        model.selection_changed.connect(lambda t: self.refresh())
        model.tables_changed.connect(self.refresh)
        self.refresh(first=True)

    def eventFilter(self, obj, ev):
        if self.first_paint_s is None and ev.type() == QtCore.QEvent.Type.Paint and self.image.image is not None:
            import time

            self.first_paint_s = time.perf_counter()
        return False

    # -- drawing ----------------------------------------------------------------------------------
    def set_auto_levels(self, on: bool = True) -> None:
        self.contrast.auto.setChecked(on)

    def set_overlay(self, name: str, on: bool) -> None:
        self.show[name] = bool(on)
        self.refresh()

    def refresh(self, first: bool = False) -> None:
        m = self.model
        if m.n_frames == 0:
            return
        i = m.current
        img = m.frame_image(i)
        if self.contrast.auto.isChecked() or self._levels is None:
            sub = img[:: max(1, img.shape[0] // 128), :: max(1, img.shape[1] // 128)]
            lo, hi = np.percentile(sub, (self.contrast.lo.value(), self.contrast.hi.value()))
            self._levels = (float(lo), float(hi) if hi > lo else float(lo) + 1)
        self.image.setImage(img, autoLevels=False, levels=self._levels)
        if first:
            self.vb.autoRange(padding=0)
        masks = m.masks(i)
        image_mode = m.mode(i) == "image"
        lt = m.label_tracks(i) if masks is not None else {}
        if masks is not None and self.show["masks"]:
            self.masks_item.setImage(class_overlay(masks[0]), autoLevels=False, levels=(0, 255))
            self.masks_item.show()
        else:
            self.masks_item.hide()
        if masks is not None and self.show["outlines"]:
            self.outline_item.setImage(outline_overlay(masks[1], lt, m.selected), autoLevels=False, levels=(0, 255))
            self.outline_item.show()
        else:
            self.outline_item.hide()
        self._draw_ids(i, lt if self.show["ids"] and image_mode else {})
        self._draw_trails(i)
        self._draw_axes(i, masks if self.show["axes"] and image_mode else None)
        t = m.time_of(i)
        extra = "  [excluded]" if m.is_excluded(i) else ""
        self.time_text.setText(f"t = {t:8.2f} s   frame {i}/{m.n_frames - 1}   {m.mode(i)}{extra}"
                               if self.show["time"] else "")
        if self.scale_bar is not None:
            nm = m.nm_per_px
            ok = self.show["scale bar"] and image_mode and finite(nm)
            self.scale_bar.setVisible(bool(ok))
            if ok:
                w_nm = img.shape[1] * nm / 5
                nice = float(10 ** np.floor(np.log10(w_nm)))
                nice *= 5 if w_nm / nice >= 5 else (2 if w_nm / nice >= 2 else 1)
                self.scale_bar.size = nice / nm
                self.scale_bar.text.setText(f"{nice:g} nm")
                self.scale_bar.updateBar()

    def _draw_ids(self, i: int, lt: dict[int, int]) -> None:
        ob = self.model.objects_at(i)
        need = len(ob) if lt else 0
        while len(self.id_items) < need:
            t = pg.TextItem(anchor=(0.5, 0.5))
            t.setZValue(8)
            self.vb.addItem(t)
            self.id_items.append(t)
        dx, dy = self.model.drift_px(i)
        nm = self.model.nm_per_px
        for k, it in enumerate(self.id_items):
            if k < need:
                r = ob.iloc[k]
                tid = int(r["track_id"])
                it.setText(str(tid), color=track_color(tid))
                it.setPos(r["x_nm"] / nm + dx, r["y_nm"] / nm + dy)
                it.show()
            else:
                it.hide()

    def _draw_trails(self, i: int) -> None:
        m = self.model
        if not self.show["trails"] or m.mode(i) != "image":
            self.trails.setData([], [])
            return
        ob = m.tables["objects"]
        ob = ob[(ob["frame"] <= i) & (ob["frame"] > i - 30)]
        if m.selected is not None:
            ob = ob[ob["track_id"] == m.selected]
        dx, dy = m.drift_px(i)
        xs, ys = [], []
        for _, g in ob.sort_values("frame").groupby("track_id"):
            xs += list(g["x_nm"] / m.nm_per_px + dx) + [np.nan]
            ys += list(g["y_nm"] / m.nm_per_px + dy) + [np.nan]
        self.trails.setData(np.asarray(xs, float), np.asarray(ys, float))

    def _draw_axes(self, i: int, masks) -> None:
        m = self.model
        if masks is None:
            self.axes.setData([], [])
            self.front_pts.setData([], [])
            self.contact_pts.setData([], [])
            return
        if not m.has_wires():
            self.axes.setData([], [])
            self.front_pts.setData([], [])
            self.contact_pts.setData([], [])
            return
        key = (i, m.summary.get("corrections", {}).get("last_id"))
        geo = self._geo_cache.get(key)
        if geo is None:
            from tem_operando.track import measure_objects

            geo = measure_objects(masks[0], masks[1], frame=i, nm_per_px=1.0)
            if len(self._geo_cache) > 64:
                self._geo_cache.clear()
            self._geo_cache[key] = geo
        wires = geo[geo["kind"] == "wire"]
        xs, ys, fx, fy, cx, cy = [], [], [], [], [], []
        lt = m.label_tracks(i)
        fr = m.tables["fronts"]
        fr = fr[fr["frame"] == i].set_index("track_id")["front_position_nm"] if not fr.empty else {}
        tr = m.tables["tracks"].set_index("track_id") if not m.tables["tracks"].empty else None
        dx, dy = m.drift_px(i)
        nm = m.nm_per_px
        for _, w in wires.iterrows():
            a = np.array([w["end_a_x_nm"], w["end_a_y_nm"]])
            b = np.array([w["end_b_x_nm"], w["end_b_y_nm"]])
            xs += [a[0], b[0]]
            ys += [a[1], b[1]]
            tid = lt.get(int(w["label"]))
            if tid is None or tr is None or tid not in tr.index or not finite(tr.loc[tid].get("contact_x_nm")):
                continue
            c = np.array([tr.loc[tid, "contact_x_nm"] / nm + dx, tr.loc[tid, "contact_y_nm"] / nm + dy])
            near, far = (a, b) if np.hypot(*(a - c)) <= np.hypot(*(b - c)) else (b, a)
            cx.append(near[0])
            cy.append(near[1])
            if tid in getattr(fr, "index", ()):
                u = (far - near) / max(np.hypot(*(far - near)), 1e-9)
                p = near + u * float(fr.loc[tid]) / nm
                fx.append(p[0])
                fy.append(p[1])
        self.axes.setData(np.asarray(xs, float), np.asarray(ys, float))
        self.front_pts.setData(fx, fy)
        self.contact_pts.setData(cx, cy)

    # -- mouse tools --------------------------------------------------------------------------------
    def stroke_start(self, x: float, y: float) -> None:
        self._stroke = []

    def stroke_add(self, x: float, y: float) -> None:
        self._stroke.append((float(x), float(y)))
        a = np.asarray(self._stroke)
        w = max(2.0, 2 * self.model.brush_radius * self._px_scale())
        self.stroke_item.setPen(pg.mkPen((255, 80, 80, 150) if self.model.tool == "erase" else (255, 255, 0, 150),
                                         width=w))
        self.stroke_item.setData(a[:, 0], a[:, 1])

    def stroke_finish(self) -> None:
        pts, self._stroke = self._stroke, []
        self.stroke_item.setData([], [])
        if pts:
            if self.model.tool == "erase":
                self.model.erase(pts)
            else:
                self.model.paint(pts)

    def _px_scale(self) -> float:
        """Screen pixels per image pixel."""
        r = self.vb.viewPixelSize()
        return 1.0 / max(r[0], 1e-9)

    def clicked(self, x: float, y: float) -> None:
        m = self.model
        tool = m.tool
        if tool in ("brush", "erase"):
            (m.erase if tool == "erase" else m.paint)([(x, y)])
        elif tool == "delete":
            m.delete_object(x, y)
        elif tool == "contact":
            tid = m.track_at(x, y) or m.selected
            if tid is None:
                m.message.emit("select a wire first (click it), then click its sodium-contact end")
            else:
                m.set_contact(tid, x, y)
        elif tool == "split":
            tid = m.track_at(x, y)
            if tid is not None:
                m.split_track(tid)
        else:
            m.select(m.track_at(x, y))
