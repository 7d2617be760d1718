"""Plots linked to the video: clicking a plot jumps to that time; the current time is marked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyqtgraph as pg
from qtpy import QtWidgets

from .models import ReviewModel, finite
from .overlays import track_color

# frames.csv columns that are not electrochemistry
_NOT_ECHEM = {"frame", "time_s", "mode", "drift_x_nm", "drift_y_nm", "n_objects", "dose_e_per_px", "analysed",
              "confidence", "cumulative_dose_e_per_px", "cumulative_dose_e_per_nm2", "excluded", "corrected"}


def _symbols(n: int, color) -> dict:
    """Point symbols for short series only (thousands of symbols slow every repaint)."""
    return dict(symbol="o", symbolSize=5, symbolBrush=color, symbolPen=None) if n <= 400 else {}


class LinkedPlot(pg.PlotWidget):
    """A plot over time with a current-time line; a click jumps the video to the clicked time."""

    def __init__(self, model: ReviewModel, title: str, ylabel: str, xlabel: str = "time (s)"):
        super().__init__(title=title)
        self.model = model
        self.setLabel("bottom", xlabel)
        self.setLabel("left", ylabel)
        self.showGrid(x=True, y=True, alpha=0.2)
        self.setDownsampling(auto=True, mode="peak")
        self.setClipToView(True)
        self.now = pg.InfiniteLine(angle=90, pen=pg.mkPen((255, 200, 0), width=1.5))
        self.addItem(self.now, ignoreBounds=True)
        self.scene().sigMouseClicked.connect(self._clicked)
        model.frame_changed.connect(lambda i: self.now.setValue(model.time_of(i)))
        self.now.setValue(model.time_of())

    def redraw_on_changes(self) -> None:
        """Redraw now and whenever the selection or the tables change (subclasses define ``redraw``)."""
        self.model.selection_changed.connect(lambda t: self.redraw())
        self.model.tables_changed.connect(self.redraw)
        self.redraw()

    def _clicked(self, ev) -> None:
        vb = self.getPlotItem().vb
        if not vb.sceneBoundingRect().contains(ev.scenePos()):
            return
        p = vb.mapSceneToView(ev.scenePos())
        self.model.jump_to_time(p.x())


class WidthPlot(LinkedPlot):
    """Width of the selected track (or all particles) with its swelling fit."""

    def __init__(self, model: ReviewModel):
        super().__init__(model, "width vs time", "width (nm)")
        self.addLegend(offset=(5, 5))
        self.redraw_on_changes()

    def redraw(self) -> None:
        self.clearPlots()
        m = self.model
        ob = m.tables["objects"]
        if ob.empty:
            return
        tids = [m.selected] if m.selected is not None else list(
            ob.groupby("track_id").size().sort_values(ascending=False).index[:6])
        for tid in tids:
            g = m.track_series(tid)
            c = track_color(tid)
            self.plot(g["time_s"].to_numpy(float), g["width_nm"].to_numpy(float), pen=pg.mkPen(c, width=1),
                      name=f"track {tid}", **_symbols(len(g), c))
            r = m.track_row(tid)
            if r and finite(r.get("swelling_rate_nm_s")) and finite(r.get("onset_s")) and finite(r.get("plateau_s")):
                t0, t1 = float(r["onset_s"]), float(r["plateau_s"])
                tt = [float(g["time_s"].min()), t0, t1, float(g["time_s"].max())]
                ww = [r["width0_nm"], r["width0_nm"], r["width1_nm"], r["width1_nm"]]
                self.plot(tt, ww, pen=pg.mkPen("w", width=2, style=pg.QtCore.Qt.PenStyle.DashLine),
                          name=f"fit {r['swelling_rate_nm_s']:.2f} ± {r.get('swelling_rate_ci95_nm_s', np.nan):.2f} nm/s")


class FrontPlot(LinkedPlot):
    """Front position of the wires (the selected one highlighted) with the rate-law fit."""

    def __init__(self, model: ReviewModel):
        super().__init__(model, "reaction front", "front from contact (nm)")
        self.addLegend(offset=(5, 5))
        self.redraw_on_changes()

    def redraw(self) -> None:
        self.clearPlots()
        m = self.model
        fr = m.tables["fronts"]
        if fr.empty:
            self.setTitle("reaction front (no wires)")
            return
        tids = [m.selected] if m.selected in set(fr["track_id"]) else sorted(fr["track_id"].unique())[:4]
        title = "reaction front"
        for tid in tids:
            g = fr[fr["track_id"] == tid].sort_values("frame")
            t, x = g["time_s"].to_numpy(float), g["front_position_nm"].to_numpy(float)
            c = track_color(tid)
            self.plot(t, x, pen=pg.mkPen(c), name=f"wire {tid}", **_symbols(len(t), c))
            r = m.track_row(tid) or {}
            law, t0 = r.get("rate_law"), r.get("front_onset_s")
            tt = np.linspace(t.min(), t.max(), 200) if t.size else np.array([])
            fit = None
            if law == "linear" and finite(r.get("front_velocity_nm_s")) and finite(t0):
                fit = np.maximum(tt - t0, 0) * r["front_velocity_nm_s"]
                title = f"front: linear, v = {r['front_velocity_nm_s']:.2f} ± {r.get('front_velocity_ci95_nm_s', np.nan):.2f} nm/s"
            elif law == "sqrt" and finite(r.get("diffusion_coefficient_nm2_s")) and finite(t0):
                fit = np.sqrt(2 * r["diffusion_coefficient_nm2_s"] * np.maximum(tt - t0, 0))
                title = f"front: √t law, D = {r['diffusion_coefficient_nm2_s']:.3g} nm²/s"
            elif law == "steps":
                title = f"front: steps ({r.get('n_steps')}), mean v = {r.get('front_velocity_nm_s', np.nan):.2f} nm/s"
            if fit is not None:
                self.plot(tt, fit, pen=pg.mkPen("w", width=2, style=pg.QtCore.Qt.PenStyle.DashLine), name=f"fit ({law})")
        self.setTitle(title)


class PhasePlot(LinkedPlot):
    """Phase fractions over time (components that reach 5 %), user relabels marked."""

    def __init__(self, model: ReviewModel):
        super().__init__(model, "phase fractions", "fraction")
        self.addLegend(offset=(5, 5))
        model.tables_changed.connect(self.redraw)
        self.redraw()

    def redraw(self) -> None:
        self.clearPlots()
        ph = self.model.tables["phases"]
        if ph.empty:
            self.setTitle("phase fractions (no diffraction frames)")
            return
        self.setTitle("phase fractions")
        t = ph["time_s"].to_numpy(float)
        cols = [c for c in ph.columns if c.startswith("frac_")] + ["amorphous_fraction"]
        for k, c in enumerate(cols):
            v = ph[c].to_numpy(float)
            if not np.nanmax(np.nan_to_num(v)) >= 0.05:
                continue
            name = c[5:] if c.startswith("frac_") else "amorphous"
            self.plot(t, v, pen=pg.mkPen(track_color(k + 1), width=2), name=name)
        if "corrected" in ph and ph["corrected"].astype(bool).any():
            cr = ph[ph["corrected"].astype(bool)]
            self.plot(cr["time_s"].to_numpy(float), np.ones(len(cr)), pen=None, symbol="t", symbolSize=10,
                      symbolBrush="w", name="relabelled")


class EchemPlot(LinkedPlot):
    """The electrochemistry log (columns of frames.csv from ``--log``)."""

    def __init__(self, model: ReviewModel):
        super().__init__(model, "electrochemistry", "value")
        self.addLegend(offset=(5, 5))
        model.tables_changed.connect(self.redraw)
        self.redraw()

    def redraw(self) -> None:
        self.clearPlots()
        fr = self.model.tables["frames"]
        cols = [c for c in fr.columns if c not in _NOT_ECHEM and pd.api.types.is_numeric_dtype(fr[c])]
        if not cols:
            cols = [c for c in ("cumulative_dose_e_per_nm2",) if c in fr]
            self.setTitle("electrochemistry (no log; cumulative dose shown)" if cols else "electrochemistry (no log)")
        else:
            self.setTitle("electrochemistry")
        for k, c in enumerate(cols[:4]):
            self.plot(fr["time_s"].to_numpy(float), fr[c].to_numpy(float), pen=pg.mkPen(track_color(k + 3), width=2),
                      name=c)


class Kymograph(QtWidgets.QWidget):
    """Intensity along the selected wire's axis (x) against time (y), with its front positions."""

    MAX_ROWS = 300

    def __init__(self, model: ReviewModel):
        super().__init__()
        self.model = model
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.plot = LinkedPlot(model, "kymograph (select a wire)", "time (s)", "position along the axis (nm)")
        self.plot.now.setAngle(0)
        self.img = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.img)
        self.front = pg.PlotDataItem(pen=None, symbol="o", symbolSize=4, symbolBrush=(255, 60, 60))
        self.plot.addItem(self.front)
        lay.addWidget(self.plot)
        self._key = None
        model.selection_changed.connect(lambda t: self.redraw())
        model.tables_changed.connect(self.redraw)
        self.plot.scene().sigMouseClicked.disconnect(self.plot._clicked)
        self.plot.scene().sigMouseClicked.connect(self._clicked)

    def _clicked(self, ev) -> None:
        vb = self.plot.getPlotItem().vb
        if vb.sceneBoundingRect().contains(ev.scenePos()):
            self.model.jump_to_time(vb.mapSceneToView(ev.scenePos()).y())

    def showEvent(self, ev):
        super().showEvent(ev)
        self.redraw()

    def redraw(self) -> None:
        m = self.model
        if not self.isVisible():
            return
        fr = m.tables["fronts"]
        wires = sorted(fr["track_id"].unique()) if not fr.empty else []
        tid = m.selected if m.selected in wires else (wires[0] if wires else None)
        if tid is None:
            self.img.clear()
            self.front.setData([], [])
            self.plot.setTitle("kymograph (no wire)")
            return
        key = (tid, len(m.tables["objects"]), m.summary.get("corrections", {}).get("last_id"))
        if key == self._key:
            return
        self._key = key
        r = m.track_row(tid) or {}
        g = m.track_series(tid)
        if g.empty:
            return
        # the axis: from the contact end through the object's centroid at its last frame (drift-corrected nm)
        last = g.iloc[-1]
        c = np.array([r.get("contact_x_nm", np.nan), r.get("contact_y_nm", np.nan)], float)
        p = np.array([last["x_nm"], last["y_nm"]], float)
        if not np.isfinite(c).all():
            c = np.array([g.iloc[0]["x_nm"], g.iloc[0]["y_nm"]]) - np.array([last["length_nm"] / 2, 0])
        u = (p - c) / max(np.hypot(*(p - c)), 1e-9)
        L = float(np.nanmax(g["length_nm"])) * 1.1
        s = np.linspace(0, L, 200)
        img_frames = m.tables["frames"]
        img_frames = img_frames[img_frames["mode"] == "image"]["frame"].to_numpy()
        img_frames = img_frames[(img_frames >= g["frame"].min()) & (img_frames <= g["frame"].max())]
        if img_frames.size > self.MAX_ROWS:
            img_frames = img_frames[np.linspace(0, img_frames.size - 1, self.MAX_ROWS).round().astype(int)]
        nm = m.nm_per_px
        rows = []
        from scipy.ndimage import map_coordinates

        for f in img_frames:
            dx, dy = m.drift_px(int(f))
            xs = (c[0] + s * u[0]) / nm + dx
            ys = (c[1] + s * u[1]) / nm + dy
            rows.append(map_coordinates(m.frame_image(int(f)), [ys, xs], order=1, mode="nearest"))
        if not rows:
            return
        k = np.asarray(rows, np.float32)
        t = np.array([m.time_of(int(f)) for f in img_frames])
        self.img.setImage(k, autoLevels=True)
        t0, t1 = float(t[0]), float(t[-1]) if t[-1] > t[0] else float(t[0]) + 1
        self.img.setRect(pg.QtCore.QRectF(0, t0, L, t1 - t0))
        fg = fr[fr["track_id"] == tid]
        self.front.setData(fg["front_position_nm"].to_numpy(float), fg["time_s"].to_numpy(float))
        self.plot.setTitle(f"kymograph of wire {tid} (front in red)")


class ProfilePlot(pg.PlotWidget):
    """The current diffraction frame's radial profile, with the best phase's library rings."""

    def __init__(self, model: ReviewModel):
        super().__init__(title="radial profile (diffraction frames)")
        self.model = model
        self.setLabel("bottom", "q (1/nm)")
        self.setLabel("left", "mean intensity")
        self.curve = self.plot([], [], pen=pg.mkPen("c", width=2))
        self.lines: list[pg.InfiniteLine] = []
        model.frame_changed.connect(lambda i: self.redraw())

    def showEvent(self, ev):
        super().showEvent(ev)
        self.redraw()

    def redraw(self) -> None:
        m = self.model
        if not self.isVisible() or m.mode() != "diffraction":
            return
        img = m.frame_image()
        cy, cx = _center(img)
        yy, xx = np.indices(img.shape)
        r = np.hypot(xx - cx, yy - cy).astype(np.int32).ravel()
        prof = np.bincount(r, img.ravel()) / np.maximum(np.bincount(r), 1)
        inv = float((m.summary.get("corrections") or {}).get("calibration", {}).get("inv_nm_per_px")
                    or m.summary.get("inv_nm_per_px") or 1.0)
        q = np.arange(prof.size) * inv
        self.curve.setData(q[2:], prof[2:])
        self.setLogMode(False, True)
        for ln in self.lines:
            self.removeItem(ln)
        self.lines = []
        ph = m.tables["phases"]
        row = ph[ph["frame"] == m.current]
        if row.empty:
            return
        best = str(row["best_phase"].iloc[0])
        self.setTitle(f"radial profile, frame {m.current}: {best} ({float(row['confidence'].iloc[0]):.2f})")
        try:
            from tem_operando.diffraction.phases import reflections

            refl = reflections(best, q_max_inv_nm=float(q[-1]))
            qcol = next(c for c in refl.columns if c.startswith("q"))
            for qq in refl[qcol].to_numpy(float)[:15]:
                ln = pg.InfiniteLine(qq, angle=90, pen=pg.mkPen((255, 120, 0), style=pg.QtCore.Qt.PenStyle.DotLine))
                self.addItem(ln)
                self.lines.append(ln)
        except Exception:  # noqa: BLE001 - amorphous or a phase without rings: no lines
            pass


def _center(img: np.ndarray) -> tuple[float, float]:
    try:
        from tem_operando.diffraction.geometry import find_center

        c = find_center(img)
        return (float(c[1]), float(c[0])) if len(c) == 2 else (img.shape[0] / 2, img.shape[1] / 2)
    except Exception:  # noqa: BLE001 - fall back to the brightest region's centroid
        w = np.clip(img - np.percentile(img, 99.5), 0, None)
        s = w.sum()
        if s <= 0:
            return img.shape[0] / 2, img.shape[1] / 2
        yy, xx = np.indices(img.shape)
        return float((yy * w).sum() / s), float((xx * w).sum() / s)


class PlotsPanel(QtWidgets.QWidget):
    """Two tab stacks of linked plots."""

    def __init__(self, model: ReviewModel, parent=None):
        super().__init__(parent)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.top = QtWidgets.QTabWidget()
        self.bottom = QtWidgets.QTabWidget()
        self.width_plot = WidthPlot(model)
        self.front_plot = FrontPlot(model)
        self.kymo = Kymograph(model)
        self.phase_plot = PhasePlot(model)
        self.profile = ProfilePlot(model)
        self.echem = EchemPlot(model)
        self.top.addTab(self.width_plot, "Width")
        self.top.addTab(self.kymo, "Kymograph")
        self.top.addTab(self.echem, "Electrochemistry")
        self.bottom.addTab(self.front_plot, "Front")
        self.bottom.addTab(self.phase_plot, "Phases")
        self.bottom.addTab(self.profile, "Radial profile")
        lay.addWidget(self.top)
        lay.addWidget(self.bottom)
