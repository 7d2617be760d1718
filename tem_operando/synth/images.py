"""Synthetic in situ TEM image series (bright-field or dark-field) with exact ground truth.

A session is rendered frame by frame in four small steps::

    geometry (distance functions)  →  projected optical depth + diffraction factors
        →  transmitted intensity (support film, Fresnel fringes, BF/DF contrast)
        →  detector (blur, illumination, flicker, Poisson shot noise, readout, hot/dead pixels)

Coordinates and conventions
---------------------------
*Sample frame* (drift-corrected, frame-0 coordinates): ``x`` in nm to the right along the image
columns, ``y`` in nm downwards along the rows, origin at the centre of the top-left pixel.
Pixel (row ``r``, column ``c``) of frame ``t`` shows the sample point
``(c·nm_per_px − drift_x_nm(t), r·nm_per_px − drift_y_nm(t))``: ``drift_*_nm`` is how far the
sample has moved in the image since frame 0. Angles are in degrees from +x towards +y (clockwise on
screen). Times are in s from the first frame (``time_s = frame / fps``).

Ground-truth masks are evaluated exactly at pixel centres for the (drifted) geometry that is
rendered into the image: ``classes`` is 0 background, 1 pristine, 2 reacted; ``instances`` holds
the object's ``track_id`` (0 = none). Where two swollen objects overlap in projection, a pixel
belongs to the object whose edge is relatively farther away (smallest signed distance divided by
the object's half width). The sodium source (the dark Na blob with its Na2O skin at a wire's
contact end) and liquid-cell bubbles are *not* objects: class 0, instance 0.

Frame values are detector counts in electrons per pixel (mean ≈ ``dose_e_per_px`` × transmitted
intensity in bright-field). With read-out noise they are offset-subtracted counts and can be
slightly negative.

Ground-truth tables (``Session`` fields)
----------------------------------------
``objects`` (``OBJECT_COLUMNS``), one row per object visible in a frame:
    frame, time_s, track_id, kind (``particle``/``wire``), x_nm, y_nm (centroid of the visible
    mask, drift-corrected), area_nm2 (visible mask pixels × nm²), width_nm (true nominal width:
    a particle's diameter; a wire's maximum width, at its contact end), width_pristine_nm
    (a wire's pristine width w0, NaN once fully reacted; NaN for particles), length_nm (particle:
    diameter; wire: true length), reacted_fraction (class-2 share of the object's mask),
    in_view_fraction (visible / total mask pixels of the object's own geometry).
``tracks`` (``TRACK_COLUMNS``), one row per object, the true kinetics:
    track_id, kind, first_frame/last_frame/n_frames (frames where visible, −1/0 if never),
    width0_nm, width1_nm (final plateau width), swelling_rate_nm_s (particle: width gain /
    (plateau − onset), i.e. the mean slope, equal to the growth rate without steps; wire: d(width)/dt
    at a fixed point behind the front, NaN for an instantaneous swell), step_rate_nm_s (the rate
    while growing), onset_s, plateau_s, width/length/area/volume_expansion_pct (fully reacted
    object: particle area ∝ d², volume ∝ d³; wire area ∝ w·L, volume ∝ w²·L), front_velocity_nm_s
    (linear: v; steps: mean including pauses; NaN otherwise), rate_law, front_exponent_n (1, 0.5,
    NaN for steps), diffusion_coefficient_nm2_s (√t law: k²/2), front_k_nm_per_sqrt_s,
    front_end_s (front reaches the far end), n_steps (growth steps of a particle / moving
    segments of a front; 1 = continuous, 0 = inert particle), fracture_frame (always NaN),
    center_x_nm, center_y_nm (particles), contact_x_nm, contact_y_nm, axis_angle_deg (wires),
    length0_nm.
``fronts`` (``FRONT_COLUMNS``): frame, time_s, track_id, front_position_nm for every wire and frame.
``frame_table`` (``FRAME_COLUMNS``): frame, time_s, mode, drift_x_nm, drift_y_nm, n_objects
    (visible), dose_e_per_px (incident dose of the frame including beam flicker).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from .._json import jsonable as _jsonable
from .session import Session

__all__ = [
    "BACKGROUNDS",
    "CONTRASTS",
    "FRAME_COLUMNS",
    "FRONT_COLUMNS",
    "OBJECT_COLUMNS",
    "RATE_LAWS",
    "SCENES",
    "TRACK_COLUMNS",
    "ObjectSpec",
    "ParticleSpec",
    "RenderParams",
    "WireSpec",
    "drift_trajectory",
    "image_series",
    "random_render_params",
    "random_scene",
    "spec_from_dict",
    "spec_to_dict",
]

SCENES = ("particles", "wire", "mixed", "empty")
BACKGROUNDS = ("carbon", "vacuum", "liquid")
CONTRASTS = ("bright-field", "dark-field")
RATE_LAWS = ("linear", "sqrt", "steps")
CROSS_SECTIONS = ("round", "belt")

OBJECT_COLUMNS = [
    "frame",
    "time_s",
    "track_id",
    "kind",
    "x_nm",
    "y_nm",
    "area_nm2",
    "width_nm",
    "width_pristine_nm",
    "length_nm",
    "reacted_fraction",
    "in_view_fraction",
]
TRACK_COLUMNS = [
    "track_id",
    "kind",
    "first_frame",
    "last_frame",
    "n_frames",
    "width0_nm",
    "width1_nm",
    "swelling_rate_nm_s",
    "step_rate_nm_s",
    "onset_s",
    "plateau_s",
    "width_expansion_pct",
    "length_expansion_pct",
    "area_expansion_pct",
    "volume_expansion_pct",
    "front_velocity_nm_s",
    "rate_law",
    "front_exponent_n",
    "diffusion_coefficient_nm2_s",
    "front_k_nm_per_sqrt_s",
    "front_end_s",
    "n_steps",
    "fracture_frame",
    "center_x_nm",
    "center_y_nm",
    "contact_x_nm",
    "contact_y_nm",
    "axis_angle_deg",
    "length0_nm",
]
FRONT_COLUMNS = ["frame", "time_s", "track_id", "front_position_nm"]
FRAME_COLUMNS = [
    "frame",
    "time_s",
    "mode",
    "drift_x_nm",
    "drift_y_nm",
    "n_objects",
    "dose_e_per_px",
]


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Return ``value`` as float or raise ValueError if it is not a finite positive number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    ok = math.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        need = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {need}, got {value!r}")
    return v


# --------------------------------------------------------------------------------------------
# Object specifications and their exact kinetics
# --------------------------------------------------------------------------------------------


@dataclass
class ParticleSpec:
    """A round particle that swells and reacts from the outside in (core–shell).

    The diameter is constant until ``onset_s``, then grows at ``swelling_rate_nm_s`` until it
    reaches ``diameter0_nm·(1 + width_expansion)`` — in ``n_steps`` equal steps separated by
    pauses of ``step_pause_s`` (stepwise sodiation, e.g. SnSb) or in one ramp (``n_steps=1``).
    The reaction progress ``p`` = (d − d0)/(d1 − d0) is the reacted volume fraction: a reacted
    shell grows inward, the pristine core having radius ``R·(1 − p)^(1/3)``. Pixels over the core
    disc are class 1 (pristine), those over the shell only are class 2 (reacted).

    Parameters
    ----------
    track_id : int
        Instance label (≥ 1).
    center_nm : (float, float)
        Centre (x, y) in the sample frame, nm.
    diameter0_nm : float
        Initial diameter, nm.
    onset_s : float
        Time at which swelling starts, s.
    swelling_rate_nm_s : float
        d(diameter)/dt while growing, nm/s (DOMAIN: 1–30 nm/s).
    width_expansion : float
        Final diameter / initial diameter − 1 (0.25 = +25 %). 0 makes an inert particle that
        never reacts (useful as a static marker).
    n_steps : int
        Number of equal growth steps (1 = one continuous ramp).
    step_pause_s : float
        Pause between two growth steps, s.
    edge_roughness : float
        RMS relative perturbation of the radius of reacted material (scaled by the progress);
        0 gives a perfectly round particle. ``diameter_nm`` is the nominal (mean) diameter.
    """

    track_id: int
    center_nm: tuple[float, float]
    diameter0_nm: float
    onset_s: float = 5.0
    swelling_rate_nm_s: float = 5.0
    width_expansion: float = 0.25
    n_steps: int = 1
    step_pause_s: float = 3.0
    edge_roughness: float = 0.01

    kind = "particle"

    def validate(self) -> None:
        """Raise ValueError if a parameter is out of range."""
        _check_track_id(self.track_id)
        _check_point("center_nm", self.center_nm)
        _positive("ParticleSpec.diameter0_nm", self.diameter0_nm)
        if not math.isfinite(float(self.onset_s)):
            raise ValueError(f"ParticleSpec.onset_s must be finite, got {self.onset_s!r}")
        _positive("ParticleSpec.swelling_rate_nm_s", self.swelling_rate_nm_s)
        _positive("ParticleSpec.width_expansion", self.width_expansion, allow_zero=True)
        if int(self.n_steps) != self.n_steps or self.n_steps < 1:
            raise ValueError(f"ParticleSpec.n_steps must be an integer ≥ 1, got {self.n_steps!r}")
        _positive("ParticleSpec.step_pause_s", self.step_pause_s, allow_zero=True)
        _positive("ParticleSpec.edge_roughness", self.edge_roughness, allow_zero=True)
        if self.edge_roughness > 0.2:
            raise ValueError("ParticleSpec.edge_roughness must be ≤ 0.2 (relative RMS)")

    @property
    def inert(self) -> bool:
        """True for a particle that never reacts (``width_expansion == 0``)."""
        return self.width_expansion == 0

    @property
    def diameter1_nm(self) -> float:
        """Final (plateau) diameter, nm."""
        return self.diameter0_nm * (1.0 + self.width_expansion)

    @property
    def step_rise_s(self) -> float:
        """Duration of one growth step, s."""
        return self.diameter0_nm * self.width_expansion / (self.n_steps * self.swelling_rate_nm_s)

    @property
    def plateau_s(self) -> float:
        """Time at which the final diameter is reached, s (NaN for an inert particle)."""
        if self.inert:
            return math.nan
        return (
            self.onset_s + self.n_steps * self.step_rise_s + (self.n_steps - 1) * self.step_pause_s
        )

    @property
    def mean_swelling_rate_nm_s(self) -> float:
        """Diameter gain divided by the swelling period (onset → plateau), nm/s."""
        if self.inert:
            return math.nan
        return (self.diameter1_nm - self.diameter0_nm) / (self.plateau_s - self.onset_s)

    def progress(self, t_s: np.ndarray | float) -> np.ndarray:
        """Reaction progress (reacted volume fraction, 0–1) at time ``t_s`` (s)."""
        t = np.asarray(t_s, dtype=float)
        if self.inert:
            return np.zeros_like(t)
        phase = t - self.onset_s
        rise, period = self.step_rise_s, self.step_rise_s + self.step_pause_s
        k = np.clip(np.floor(phase / period), 0, self.n_steps)
        within = np.clip((phase - k * period) / rise, 0.0, 1.0)
        done = np.where(k < self.n_steps, k + within, self.n_steps)
        return np.where(phase <= 0, 0.0, np.clip(done / self.n_steps, 0.0, 1.0))

    def diameter_nm(self, t_s: np.ndarray | float) -> np.ndarray:
        """Nominal diameter (the width across any axis) at time ``t_s``, nm."""
        return self.diameter0_nm + (self.diameter1_nm - self.diameter0_nm) * self.progress(t_s)


@dataclass
class WireSpec:
    """A straight nanowire (``cross_section="round"``) or nanobelt (``"belt"``) sodiated from one end.

    The wire starts at the sodium-contact end ``contact_nm`` and runs along ``angle_deg`` for
    ``length0_nm``. A big Na-metal blob with a lighter Na2O skin touches the contact end (tangent
    to the end face, centred ``na_source_radius_nm`` behind it); it is not an object (class 0).
    A reaction front starts at the contact end at ``onset_s``; its distance from the contact end
    along the axis follows ``rate_law``:

    * ``"linear"``: x = v·(t − onset) with v = ``front_velocity_nm_s``;
    * ``"sqrt"``: x = k·√(t − onset) with k = ``front_k_nm_per_sqrt_s`` (diffusion-limited;
      D_eff = x²/(2(t − onset)) = k²/2);
    * ``"steps"``: stop-and-go — moving segments of lengths ``step_lengths_nm`` (default
      ``front_n_steps`` equal segments covering the wire) at ``front_velocity_nm_s``, separated by
      pauses ``step_pauses_s`` (one value or one per gap); the front stops after the last one.

    The front stops at the far end, x_max = ``length0_nm·(1 + length_expansion)``. Behind the
    front the wire is reacted (class 2) and swells: at a fixed point the width grows from w0 at
    ``swelling_rate_nm_s`` (d(width)/dt, nm/s) from the moment the front passes, up to
    w0·(1 + ``width_expansion``) — giving a taper behind the front of length v·Δw/rate. With an
    infinite rate the width jumps at the front, with a linear taper of ``front_taper_nm``.
    The reacted part lengthens by ``length_expansion``: total length L0 + x·ε_L/(1 + ε_L).

    Parameters
    ----------
    track_id : int
        Instance label (≥ 1).
    contact_nm : (float, float)
        Sodium-contact end (x, y), sample frame, nm (middle of the end face).
    angle_deg : float
        Axis direction from the contact end, degrees from +x towards +y.
    length0_nm, width0_nm : float
        Initial length and width, nm.
    onset_s : float
        Time at which the front leaves the contact end, s.
    rate_law : {"linear", "sqrt", "steps"}
    front_velocity_nm_s : float
        Front velocity (linear) or velocity while moving (steps), nm/s.
    front_k_nm_per_sqrt_s : float
        Prefactor k of the √t law, nm/√s.
    front_n_steps : int
        Number of moving segments for ``"steps"`` when ``step_lengths_nm`` is empty.
    step_lengths_nm : sequence of float
        Length of each moving segment for ``"steps"``, nm.
    step_pauses_s : float or sequence of float
        Pause(s) between moving segments, s.
    width_expansion, length_expansion : float
        Final/initial − 1 of the width and the reacted length.
    swelling_rate_nm_s : float
        d(width)/dt at a fixed point behind the front, nm/s (``math.inf``: instantaneous).
    front_taper_nm : float or None
        Taper length for an instantaneous swell, nm (default width0/2).
    cross_section : {"round", "belt"}
        Round nanowire (thickness 2√((w/2)² − n²)) or flat nanobelt (constant thickness).
    thickness_nm : float or None
        Belt thickness, nm (default 0.4·width0); it swells with the width.
    na_source_radius_nm : float or None
        Radius of the Na blob, nm (None: 3·width0 or 0.25·length0, whichever is larger;
        0: no blob).
    edge_roughness : float
        RMS relative perturbation of each edge of the reacted part (0 = straight edges).
    """

    track_id: int
    contact_nm: tuple[float, float]
    angle_deg: float
    length0_nm: float
    width0_nm: float
    onset_s: float = 2.0
    rate_law: str = "linear"
    front_velocity_nm_s: float = 5.0
    front_k_nm_per_sqrt_s: float = 30.0
    front_n_steps: int = 3
    step_lengths_nm: tuple[float, ...] = ()
    step_pauses_s: float | tuple[float, ...] = 3.0
    width_expansion: float = 0.15
    length_expansion: float = 0.0
    swelling_rate_nm_s: float = 5.0
    front_taper_nm: float | None = None
    cross_section: str = "round"
    thickness_nm: float | None = None
    na_source_radius_nm: float | None = None
    edge_roughness: float = 0.01

    kind = "wire"

    # -- validation and derived geometry ------------------------------------------------------

    def validate(self) -> None:
        """Raise ValueError if a parameter is out of range."""
        _check_track_id(self.track_id)
        _check_point("contact_nm", self.contact_nm)
        for name in ("angle_deg", "onset_s"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"WireSpec.{name} must be finite")
        _positive("WireSpec.length0_nm", self.length0_nm)
        _positive("WireSpec.width0_nm", self.width0_nm)
        if self.rate_law not in RATE_LAWS:
            raise ValueError(f"WireSpec.rate_law must be one of {RATE_LAWS}, got {self.rate_law!r}")
        if self.rate_law in ("linear", "steps"):
            _positive("WireSpec.front_velocity_nm_s", self.front_velocity_nm_s)
        if self.rate_law == "sqrt":
            _positive("WireSpec.front_k_nm_per_sqrt_s", self.front_k_nm_per_sqrt_s)
        if self.rate_law == "steps":
            if not self.step_lengths_nm and (
                int(self.front_n_steps) != self.front_n_steps or self.front_n_steps < 1
            ):
                raise ValueError("WireSpec.front_n_steps must be an integer ≥ 1")
            for v in self.step_lengths_nm:
                _positive("WireSpec.step_lengths_nm[i]", v)
            for v in np.atleast_1d(self.step_pauses_s):
                _positive("WireSpec.step_pauses_s", v, allow_zero=True)
            self.step_schedule()  # enough pauses for the segments
        _positive("WireSpec.width_expansion", self.width_expansion, allow_zero=True)
        _positive("WireSpec.length_expansion", self.length_expansion, allow_zero=True)
        if not (self.swelling_rate_nm_s > 0):
            raise ValueError("WireSpec.swelling_rate_nm_s must be > 0 (math.inf for instantaneous)")
        if self.front_taper_nm is not None:
            _positive("WireSpec.front_taper_nm", self.front_taper_nm)
        if self.cross_section not in CROSS_SECTIONS:
            raise ValueError(f"WireSpec.cross_section must be one of {CROSS_SECTIONS}")
        if self.thickness_nm is not None:
            _positive("WireSpec.thickness_nm", self.thickness_nm)
        if self.na_source_radius_nm is not None:
            _positive("WireSpec.na_source_radius_nm", self.na_source_radius_nm, allow_zero=True)
        _positive("WireSpec.edge_roughness", self.edge_roughness, allow_zero=True)
        if self.edge_roughness > 0.2:
            raise ValueError("WireSpec.edge_roughness must be ≤ 0.2 (relative RMS)")

    @property
    def axis(self) -> tuple[float, float]:
        """Unit vector (ux, uy) from the contact end along the wire."""
        a = math.radians(self.angle_deg)
        return math.cos(a), math.sin(a)

    @property
    def width1_nm(self) -> float:
        """Width of fully swollen (reacted) wire, nm."""
        return self.width0_nm * (1.0 + self.width_expansion)

    @property
    def max_front_nm(self) -> float:
        """Front position at which the whole wire has reacted (the far end), nm."""
        return self.length0_nm * (1.0 + self.length_expansion)

    @property
    def belt_thickness_nm(self) -> float:
        """Initial thickness of a belt, nm."""
        return self.thickness_nm if self.thickness_nm is not None else 0.4 * self.width0_nm

    @property
    def na_radius_nm(self) -> float:
        """Radius of the Na source blob, nm (0 = none)."""
        if self.na_source_radius_nm is not None:
            return float(self.na_source_radius_nm)
        return max(3.0 * self.width0_nm, 0.25 * self.length0_nm)

    @property
    def na_center_nm(self) -> tuple[float, float]:
        """Centre of the Na source blob (tangent to the contact end face), nm."""
        ux, uy = self.axis
        r = self.na_radius_nm
        return self.contact_nm[0] - ux * r, self.contact_nm[1] - uy * r

    @property
    def taper_nm(self) -> float:
        """Taper length used for an instantaneous swell, nm."""
        return self.front_taper_nm if self.front_taper_nm is not None else 0.5 * self.width0_nm

    # -- front kinetics -------------------------------------------------------------------------

    def step_schedule(self) -> tuple[np.ndarray, np.ndarray]:
        """Moving segments of a ``"steps"`` front: (lengths_nm, start_times_s), trimmed at the end."""
        xmax = self.max_front_nm
        if self.step_lengths_nm:
            lengths = np.asarray(self.step_lengths_nm, dtype=float)
        else:
            lengths = np.full(int(self.front_n_steps), xmax / int(self.front_n_steps))
        starts_x = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
        keep = starts_x < xmax
        lengths = np.minimum(lengths[keep], xmax - starts_x[keep])
        n = lengths.size
        pauses = (
            np.broadcast_to(np.asarray(self.step_pauses_s, dtype=float).ravel(), (max(n - 1, 0),))
            if np.ndim(self.step_pauses_s) == 0
            else np.asarray(self.step_pauses_s, float)[: max(n - 1, 0)]
        )
        if pauses.size < n - 1:
            raise ValueError(f"WireSpec.step_pauses_s needs {n - 1} values, got {pauses.size}")
        durations = lengths / self.front_velocity_nm_s
        starts_t = self.onset_s + np.concatenate([[0.0], np.cumsum(durations[:-1] + pauses)])
        return lengths, starts_t

    def front_position_nm(self, t_s: np.ndarray | float) -> np.ndarray:
        """Front position from the contact end along the axis at time ``t_s``, nm."""
        t = np.asarray(t_s, dtype=float)
        dt = np.maximum(t - self.onset_s, 0.0)
        if self.rate_law == "linear":
            x = self.front_velocity_nm_s * dt
        elif self.rate_law == "sqrt":
            x = self.front_k_nm_per_sqrt_s * np.sqrt(dt)
        else:
            lengths, starts = self.step_schedule()
            moved = self.front_velocity_nm_s * (t[..., None] - starts)
            x = np.clip(moved, 0.0, lengths).sum(axis=-1)
        return np.minimum(x, self.max_front_nm)

    def front_pass_time_s(self, s_nm: np.ndarray | float) -> np.ndarray:
        """Time at which the front reaches position ``s_nm`` along the axis, s (inverse law)."""
        s = np.maximum(np.asarray(s_nm, dtype=float), 0.0)
        if self.rate_law == "linear":
            return self.onset_s + s / self.front_velocity_nm_s
        if self.rate_law == "sqrt":
            return self.onset_s + (s / self.front_k_nm_per_sqrt_s) ** 2
        lengths, starts = self.step_schedule()
        edges = np.concatenate([[0.0], np.cumsum(lengths)])
        i = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, lengths.size - 1)
        t = starts[i] + (s - edges[i]) / self.front_velocity_nm_s
        return np.where(s > edges[-1], np.inf, t)

    @property
    def front_end_s(self) -> float:
        """Time at which the front reaches the far end, s (inf if it never does)."""
        return float(self.front_pass_time_s(self.max_front_nm))

    @property
    def mean_front_velocity_nm_s(self) -> float:
        """Front velocity (linear) or mean velocity including pauses (steps), nm/s; NaN for √t."""
        if self.rate_law == "linear":
            return float(self.front_velocity_nm_s)
        if self.rate_law == "sqrt":
            return math.nan
        lengths, starts = self.step_schedule()
        end = starts[-1] + lengths[-1] / self.front_velocity_nm_s
        return float(lengths.sum() / (end - self.onset_s))

    def length_nm(self, t_s: np.ndarray | float) -> np.ndarray:
        """Total length at time ``t_s``, nm."""
        eps = self.length_expansion
        return self.length0_nm + self.front_position_nm(t_s) * eps / (1.0 + eps)

    def swell_progress(self, s_nm: np.ndarray, t_s: float, front_nm: float) -> np.ndarray:
        """Local swelling progress 0–1 at axial position(s) ``s_nm`` at time ``t_s``."""
        behind = np.asarray(s_nm) < front_nm
        if self.width_expansion == 0:
            return behind.astype(float)
        if math.isinf(self.swelling_rate_nm_s):
            g = (front_nm - np.asarray(s_nm)) / self.taper_nm
        else:
            dw = self.width1_nm - self.width0_nm
            g = self.swelling_rate_nm_s * (t_s - self.front_pass_time_s(s_nm)) / dw
        return np.where(behind, np.clip(g, 0.0, 1.0), 0.0)

    def max_width_nm(self, t_s: float) -> float:
        """Maximum nominal width along the wire (at the contact end) at time ``t_s``, nm."""
        xf = float(self.front_position_nm(t_s))
        if xf <= 0:
            return float(self.width0_nm)
        g = float(self.swell_progress(np.array(0.0), t_s, xf))
        return self.width0_nm + (self.width1_nm - self.width0_nm) * g

    @property
    def plateau_s(self) -> float:
        """Time at which the contact end reaches the final width, s."""
        if self.width_expansion == 0:
            return float(self.onset_s)
        if math.isinf(self.swelling_rate_nm_s):
            return float(self.front_pass_time_s(min(self.taper_nm, self.max_front_nm)))
        return self.onset_s + (self.width1_nm - self.width0_nm) / self.swelling_rate_nm_s


ObjectSpec = ParticleSpec | WireSpec  #: either kind of object


def _check_track_id(track_id: Any) -> None:
    if isinstance(track_id, bool) or int(track_id) != track_id or track_id < 1:
        raise ValueError(f"track_id must be an integer ≥ 1, got {track_id!r}")


def _check_point(name: str, p: Any) -> None:
    if len(p) != 2 or not all(math.isfinite(float(v)) for v in p):
        raise ValueError(f"{name} must be two finite numbers (x_nm, y_nm), got {p!r}")


def spec_to_dict(spec: ObjectSpec) -> dict[str, Any]:
    """JSON-serialisable dict of a spec (``kind`` added; inf → None)."""
    d = {"kind": spec.kind, **asdict(spec)}
    return _jsonable(d)


def spec_from_dict(d: dict[str, Any]) -> ObjectSpec:
    """Inverse of :func:`spec_to_dict`."""
    d = dict(d)
    kind = d.pop("kind")
    cls = {"particle": ParticleSpec, "wire": WireSpec}[kind]
    if cls is WireSpec:
        if d.get("swelling_rate_nm_s") is None:
            d["swelling_rate_nm_s"] = math.inf
        d["contact_nm"] = tuple(d["contact_nm"])
        d["step_lengths_nm"] = tuple(d.get("step_lengths_nm") or ())
        if isinstance(d.get("step_pauses_s"), list):
            d["step_pauses_s"] = tuple(d["step_pauses_s"])
    else:
        d["center_nm"] = tuple(d["center_nm"])
    return cls(**d)


# --------------------------------------------------------------------------------------------
# Random scenes
# --------------------------------------------------------------------------------------------


def _field_nm(shape: tuple[int, int], nm_per_px: float) -> tuple[float, float]:
    """(width, height) of the field between the outer pixel centres, nm."""
    return (shape[1] - 1) * nm_per_px, (shape[0] - 1) * nm_per_px


def _ray_to_box(p: np.ndarray, u: np.ndarray, w: float, h: float) -> float:
    """Distance from point ``p`` inside the box [0,w]×[0,h] along ``u`` to its boundary."""
    ts = []
    for pi, ui, hi in ((p[0], u[0], w), (p[1], u[1], h)):
        if ui > 1e-12:
            ts.append((hi - pi) / ui)
        elif ui < -1e-12:
            ts.append(-pi / ui)
    return min(ts)


def _point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0)
    return float(np.hypot(*(p - (a + t * ab))))


def _clearance(center: np.ndarray, radius: float, obstacles: list[tuple]) -> float:
    """Smallest gap between a disc and a list of obstacles (discs or thick segments), nm."""
    gap = math.inf
    for ob in obstacles:
        if ob[0] == "disc":
            gap = min(gap, float(np.hypot(*(center - ob[1]))) - ob[2] - radius)
        else:
            gap = min(gap, _point_segment_distance(center, ob[1], ob[2]) - ob[3] - radius)
    return gap


def _random_particle_kinetics(d0: float, duration_s: float, rng: np.random.Generator) -> dict:
    """Onset, rate, expansion and steps whose events fall inside ``duration_s``."""
    expansion = rng.uniform(0.10, 0.40)
    growth = d0 * expansion
    onset = rng.uniform(0.05, 0.3) * duration_s
    available = 0.9 * duration_s - onset
    n_steps = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    period = rng.uniform(0.35, 0.75) * available
    active = period if n_steps == 1 else 0.6 * period
    pause = 0.0 if n_steps == 1 else (period - active) / (n_steps - 1)
    rate = float(np.clip(growth / active, 1.0, 30.0))
    if growth / rate + pause * (n_steps - 1) > available:
        rate = growth / max(available - pause * (n_steps - 1), 1e-3)
    return {
        "onset_s": onset,
        "swelling_rate_nm_s": rate,
        "width_expansion": expansion,
        "n_steps": n_steps,
        "step_pause_s": pause if n_steps > 1 else 3.0,
        "edge_roughness": rng.uniform(0.005, 0.02),
    }


def _diameter_range(w: float, h: float) -> tuple[float, float]:
    d_max = min(120.0, 0.3 * min(w, h))
    return min(20.0, 0.4 * d_max), d_max


def _random_particles(
    first_id: int,
    n: int,
    field: tuple[float, float],
    duration_s: float,
    rng: np.random.Generator,
    obstacles: list[tuple],
    near: tuple | None = None,
    touching_pair: bool = False,
) -> list[ParticleSpec]:
    """Place up to ``n`` random particles inside the field, not overlapping ``obstacles``.

    ``near`` = (a, b, half_width) places them beside that segment (the wire in ``"mixed"``);
    ``touching_pair`` puts the second particle so close to the first that they touch once
    both have swollen.
    """
    w, h = field
    d_lo, d_hi = _diameter_range(w, h)
    specs: list[ParticleSpec] = []
    for _ in range(n):
        d0 = float(np.exp(rng.uniform(np.log(d_lo), np.log(d_hi))))
        kin = _random_particle_kinetics(d0, duration_s, rng)
        r0, r1 = d0 / 2, d0 * (1 + kin["width_expansion"]) / 2
        margin = r1 + 0.02 * min(w, h)
        partner = specs[0] if (touching_pair and len(specs) == 1) else None
        for _attempt in range(200):
            if partner is not None:
                p_r0 = partner.diameter0_nm / 2
                p_grow = (partner.diameter1_nm - partner.diameter0_nm) / 2
                gap = rng.uniform(0.15, 0.6) * (p_grow + r1 - r0)
                ang = rng.uniform(0, 2 * np.pi)
                c = np.asarray(partner.center_nm) + (p_r0 + r0 + max(gap, 0.5)) * np.array(
                    [np.cos(ang), np.sin(ang)]
                )
                others = obstacles[:-1]  # the partner itself is the last obstacle
            elif near is not None:
                a, b, half = near
                t = rng.uniform(0.15, 0.95)
                axis = (b - a) / np.hypot(*(b - a))
                normal = np.array([-axis[1], axis[0]]) * rng.choice([-1.0, 1.0])
                c = a + t * (b - a) + normal * (half + rng.uniform(3.0, 30.0) + r1)
                others = obstacles
            else:
                c = (
                    rng.uniform([margin, margin], [w - margin, h - margin])
                    if w > 2 * margin and h > 2 * margin
                    else np.array([w / 2, h / 2])
                )
                others = obstacles
            inside = margin <= c[0] <= w - margin and margin <= c[1] <= h - margin
            if inside and _clearance(c, r1, others) >= 2.0:
                break
        else:
            continue
        specs.append(
            ParticleSpec(
                track_id=first_id + len(specs),
                center_nm=(float(c[0]), float(c[1])),
                diameter0_nm=d0,
                **kin,
            )
        )
        obstacles.append(("disc", c, r1))
    return specs


def _random_wire(
    track_id: int, field: tuple[float, float], duration_s: float, rng: np.random.Generator
) -> WireSpec:
    """One wire crossing most of the field, its Na source partly outside, front kinetics inside."""
    w, h = field
    side = min(w, h)
    width0 = float(
        np.exp(rng.uniform(np.log(min(20.0, 0.08 * side)), np.log(min(80.0, 0.15 * side))))
    )
    for _attempt in range(50):  # a direction along which the wire can cross most of the field
        angle = rng.uniform(0, 360)
        u = np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
        centre = np.array([w / 2, h / 2]) + rng.uniform(-0.08, 0.08, 2) * side
        back, ahead = _ray_to_box(centre, -u, w, h), _ray_to_box(centre, u, w, h)
        if back + ahead >= 0.9 * max(w, h):
            break
    inset = rng.uniform(0.06, 0.14) * side + 0.5 * width0
    contact = centre - u * (back - inset)
    eps_w = rng.uniform(0.08, 0.30)
    eps_l = rng.uniform(0.0, 0.08) if rng.random() < 0.5 else 0.0
    room = (back - inset) + ahead - (0.05 * side + 0.6 * width0)
    length0 = room * rng.uniform(0.8, 0.95) / (1 + eps_l)
    xmax = length0 * (1 + eps_l)
    onset = rng.uniform(0.03, 0.15) * duration_s
    available = duration_s - onset
    target = rng.uniform(0.65, 0.92) * xmax
    law = str(rng.choice(RATE_LAWS, p=[0.5, 0.25, 0.25]))
    kin: dict[str, Any] = {"rate_law": law}
    if law == "linear":
        kin["front_velocity_nm_s"] = target / available
    elif law == "sqrt":
        kin["front_k_nm_per_sqrt_s"] = target / math.sqrt(available)
    else:
        n = int(rng.integers(2, 5))
        lengths = rng.dirichlet(np.full(n, 4.0)) * target
        pause_total = rng.uniform(0.25, 0.45) * available
        pauses = rng.dirichlet(np.full(n - 1, 4.0)) * pause_total if n > 1 else np.zeros(0)
        kin.update(
            step_lengths_nm=tuple(float(v) for v in lengths),
            step_pauses_s=tuple(float(v) for v in pauses),
            front_velocity_nm_s=target / (available - pause_total),
            front_n_steps=n,
        )
    dw = eps_w * width0
    rate = float(np.exp(rng.uniform(np.log(2.0), np.log(20.0))))
    rate = max(rate, dw / (0.3 * available))
    cross = "round" if rng.random() < 0.6 else "belt"
    return WireSpec(
        track_id=track_id,
        contact_nm=(float(contact[0]), float(contact[1])),
        angle_deg=float(angle),
        length0_nm=float(length0),
        width0_nm=width0,
        onset_s=float(onset),
        width_expansion=eps_w,
        length_expansion=eps_l,
        swelling_rate_nm_s=rate,
        cross_section=cross,
        thickness_nm=float(width0 * rng.uniform(0.3, 0.6)) if cross == "belt" else None,
        na_source_radius_nm=float(max(rng.uniform(0.25, 0.45) * side, 2 * width0, 1.5 * inset)),
        edge_roughness=float(rng.uniform(0.005, 0.025)),
        **kin,
    )


def random_scene(
    scene: str = "mixed",
    shape: tuple[int, int] = (256, 256),
    nm_per_px: float = 1.0,
    duration_s: float = 30.0,
    rng: Any = None,
) -> list[ObjectSpec]:
    """Draw realistic random objects for a scene, all inside the field of view.

    Parameters
    ----------
    scene : {"particles", "wire", "mixed", "empty"}
        ``"particles"``: 3–6 round particles (20–120 nm, at most 0.3 × the field) with one pair
        so close that they touch once swollen; ``"wire"``: one wire/belt (20–80 nm wide) with its
        Na source partly outside the field; ``"mixed"``: a wire with 2–4 particles beside it;
        ``"empty"``: nothing.
    shape : (int, int)
        Frame shape (rows, columns), px.
    nm_per_px : float
        Pixel size, nm/px.
    duration_s : float
        Recording duration, s; swelling plateaus and 65–92 % of the front's travel fall inside.
    rng : None, int or numpy.random.Generator

    Returns
    -------
    list of ParticleSpec / WireSpec
        Objects with track ids 1, 2, …, not overlapping at the start (discs may touch later).
    """
    if scene not in SCENES:
        raise ValueError(f"unknown scene {scene!r}; choose one of {SCENES}")
    nm_per_px = _positive("nm_per_px", nm_per_px)
    duration_s = _positive("duration_s", duration_s)
    rng = np.random.default_rng(rng)
    field = _field_nm(shape, nm_per_px)
    if scene == "empty":
        return []
    if scene == "particles":
        return list(
            _random_particles(
                1, int(rng.integers(3, 7)), field, duration_s, rng, [], touching_pair=True
            )
        )
    wire = _random_wire(1, field, duration_s, rng)
    if scene == "wire":
        return [wire]
    a = np.asarray(wire.contact_nm)
    b = a + np.asarray(wire.axis) * wire.max_front_nm
    half = wire.width1_nm / 2 * (1 + 3 * wire.edge_roughness)
    obstacles: list[tuple] = [
        ("segment", a, b, half),
        ("disc", np.asarray(wire.na_center_nm), wire.na_radius_nm),
    ]
    parts = _random_particles(
        2, int(rng.integers(2, 5)), field, duration_s, rng, obstacles, near=(a, b, half)
    )
    return [wire, *parts]


# --------------------------------------------------------------------------------------------
# Rendering parameters (one random realistic set per session)
# --------------------------------------------------------------------------------------------


@dataclass
class RenderParams:
    """Appearance of a session; every field can be overridden through ``image_series(**options)``.

    Lengths in nm unless the name says px; ``*_amp`` are relative intensity amplitudes;
    ``mfp`` = mean free path λ of the mass–thickness law I = exp(−t/λ).
    """

    film_thickness_nm: float = 20.0  #: carbon support film thickness
    film_mfp_nm: float = 160.0  #: λ of amorphous carbon
    film_texture_amp: float = 0.05  #: RMS of the film's mottled phase-contrast grain
    film_grain_nm: float = 1.0  #: grain size of the film texture
    liquid_thickness_nm: float = 300.0  #: liquid + windows thickness (liquid cell)
    liquid_mfp_nm: float = 350.0  #: λ of the liquid layer
    liquid_contrast: float = 0.5  #: contrast kept in a liquid cell (0–1)
    liquid_blur_px: float = 2.5  #: extra blur in a liquid cell, px
    n_bubbles: int = 1  #: gas bubbles in a liquid cell
    mfp_pristine_nm: float = 80.0  #: λ of pristine (crystalline) electrode material
    mfp_reacted_ratio: float = 1.8  #: λ_reacted / λ_pristine (> 1: reacted is lighter)
    na_tau_center: float = 2.8  #: optical depth t/λ at the centre of the Na blob
    na2o_skin_fraction: float = 0.07  #: Na2O skin thickness / blob radius
    na2o_tau_ratio: float = 0.4  #: optical depth per nm of Na2O relative to Na
    bend_contour_amp: float = 0.35  #: depth of the dark bend contours
    bend_contour_width_frac: float = 0.08  #: contour width / object width
    bend_contour_speed_nm_s: float = 1.0  #: how fast bend contours sweep, nm/s
    n_bend_families: int = 2  #: contour families (directions) per object
    thickness_fringe_amp: float = 0.15  #: depth of thickness fringes
    extinction_distance_nm: float = 40.0  #: thickness period of the fringes
    fresnel_amp: float = 0.2  #: edge fringe: > 0 bright (underfocus), < 0 dark
    fresnel_width_px: float = 1.0  #: width of the Fresnel fringe, px
    grain_amp: float = 0.4  #: mottling of reacted material (metal nanograins)
    grain_size_nm: float = 3.0  #: nanograin size
    illum_gradient: float = 0.05  #: linear illumination change across the field
    illum_angle_deg: float = 0.0  #: direction of the illumination gradient
    illum_falloff: float = 0.04  #: radial fall-off of the beam towards the corners
    flicker: float = 0.01  #: RMS frame-to-frame beam-intensity change
    focus_wobble: float = 0.1  #: relative blur oscillation (focus changes)
    focus_period_s: float = 30.0  #: period of the focus oscillation, s
    gain_variation: float = 0.01  #: RMS pixel-to-pixel gain (flat-field residual)
    readout_noise_e: float = 0.5  #: Gaussian read-out noise, e⁻ RMS
    hot_pixel_fraction: float = 1e-4  #: fraction of hot pixels
    dead_pixel_fraction: float = 5e-5  #: fraction of dead pixels
    df_background: float = 0.05  #: dark-field signal of vacuum (fraction of dose)


def random_render_params(rng: Any = None) -> RenderParams:
    """Draw a realistic random appearance (DOMAIN.md "What real frames look like")."""
    rng = np.random.default_rng(rng)
    u = rng.uniform
    return RenderParams(
        film_thickness_nm=u(8, 30),
        film_mfp_nm=u(140, 200),
        film_texture_amp=u(0.02, 0.08),
        film_grain_nm=u(0.5, 1.5),
        liquid_thickness_nm=u(150, 600),
        liquid_mfp_nm=u(300, 400),
        liquid_contrast=u(0.3, 0.65),
        liquid_blur_px=u(1.5, 4.0),
        n_bubbles=int(rng.integers(0, 4)),
        mfp_pristine_nm=u(45, 110),
        mfp_reacted_ratio=u(1.4, 2.2),
        na_tau_center=u(2.0, 3.5),
        na2o_skin_fraction=u(0.04, 0.1),
        na2o_tau_ratio=u(0.25, 0.5),
        bend_contour_amp=u(0.15, 0.5),
        bend_contour_width_frac=u(0.04, 0.12),
        bend_contour_speed_nm_s=u(0.2, 2.0),
        n_bend_families=int(rng.integers(1, 3)),
        thickness_fringe_amp=u(0.0, 0.25),
        extinction_distance_nm=u(20, 60),
        fresnel_amp=u(-0.2, 0.3),
        fresnel_width_px=u(0.6, 1.5),
        grain_amp=u(0.25, 0.6),
        grain_size_nm=u(1.5, 5.0),
        illum_gradient=u(0.0, 0.1),
        illum_angle_deg=u(0, 360),
        illum_falloff=u(0.0, 0.08),
        flicker=u(0.003, 0.03),
        focus_wobble=u(0.0, 0.25),
        focus_period_s=u(10, 60),
        gain_variation=u(0.0, 0.02),
        readout_noise_e=u(0.0, 1.0),
        hot_pixel_fraction=u(0.0, 2e-4),
        dead_pixel_fraction=u(0.0, 1e-4),
        df_background=u(0.02, 0.08),
    )


def _apply_options(rp: RenderParams, options: dict[str, Any]) -> RenderParams:
    names = {f.name for f in fields(RenderParams)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown}; valid options are the RenderParams "
            f"fields: {sorted(names)}"
        )
    for k, v in options.items():
        if k not in ("fresnel_amp", "illum_angle_deg"):
            _positive(k, v, allow_zero=True)
    return RenderParams(**{**asdict(rp), **options})


# --------------------------------------------------------------------------------------------
# Per-object random appearance ("decorations") and drift
# --------------------------------------------------------------------------------------------


@dataclass
class _Decor:
    """Random, fixed appearance details of one object (edge roughness, bend contours)."""

    orientation: float  # extra diffraction darkening of the pristine crystal (≥ 1)
    rough_a: np.ndarray  # (2, K) edge roughness amplitudes (relative, RMS 1 per row)
    rough_q: np.ndarray  # (2, K) harmonics (particle) or wavenumbers 1/nm (wire)
    rough_phi: np.ndarray  # (2, K) phases
    bend_angle: np.ndarray  # (F,) contour directions, rad
    bend_spacing_nm: np.ndarray  # (F,) contour period, nm
    bend_offset_nm: np.ndarray  # (F,)
    bend_speed_nm_s: np.ndarray  # (F,)


def _draw_decor(spec: ObjectSpec, rp: RenderParams, rng: np.random.Generator) -> _Decor:
    size = spec.diameter0_nm if isinstance(spec, ParticleSpec) else spec.width0_nm
    k = 8
    if isinstance(spec, ParticleSpec):
        q = np.tile(np.arange(3, 3 + k, dtype=float), (2, 1))
        amp = q**-1.0
    else:
        wavelength = rng.uniform(0.4, 3.0, (2, k)) * size
        q = 2 * np.pi / wavelength
        amp = wavelength / wavelength.max()
    amp = amp / np.sqrt((amp**2).sum(axis=1, keepdims=True) / 2)  # RMS of Σ a cos(...) = 1
    f = max(int(rp.n_bend_families), 0)
    return _Decor(
        orientation=float(rng.uniform(1.0, 1.6)),
        rough_a=amp,
        rough_q=q,
        rough_phi=rng.uniform(0, 2 * np.pi, (2, k)),
        bend_angle=rng.uniform(0, np.pi, f),
        bend_spacing_nm=rng.uniform(1.0, 2.5, f) * size,
        bend_offset_nm=rng.uniform(0, size, f),
        bend_speed_nm_s=rp.bend_contour_speed_nm_s
        * rng.choice([-1.0, 1.0], f)
        * rng.uniform(0.5, 1.5, f),
    )


def _draw_blob_harmonics(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = np.arange(2, 8, dtype=float)
    a = rng.uniform(0.01, 0.04) * k**-1.0 / np.sqrt((k**-2.0).sum() / 2)
    return k, a, rng.uniform(0, 2 * np.pi, k.size)


def drift_trajectory(
    time_s: np.ndarray,
    drift_nm_per_s: tuple[float, float],
    drift_jumps: Sequence[tuple[float, float, float]] = (),
) -> np.ndarray:
    """True stage drift (x, y) in nm of each frame relative to frame 0.

    Parameters
    ----------
    time_s : ndarray, shape (T,)
        Frame times, s.
    drift_nm_per_s : (float, float)
        Constant drift velocity (vx, vy), nm/s.
    drift_jumps : sequence of (time_s, dx_nm, dy_nm)
        Sudden stage moves: from ``time_s`` on, the sample is shifted by (dx, dy) more.

    Returns
    -------
    ndarray, shape (T, 2)
        Drift in nm, exactly 0 at ``time_s[0]`` unless a jump happens at that time.
    """
    t = np.asarray(time_s, dtype=float)
    d = (t - t[0])[:, None] * np.asarray(drift_nm_per_s, dtype=float)[None, :]
    for tj, dx, dy in drift_jumps:
        d[t >= tj] += (dx, dy)
    return d


def _check_drift(
    drift_nm_per_s: Any,
    drift_jumps: Any,
    duration_s: float,
    field_nm: float,
    rng: np.random.Generator,
) -> tuple[tuple[float, float], list[tuple[float, float, float]]]:
    if drift_nm_per_s is None:
        speed, ang = rng.uniform(0.0, 1.5), rng.uniform(0, 2 * np.pi)
        drift_nm_per_s = (speed * math.cos(ang), speed * math.sin(ang))
    v = tuple(float(x) for x in drift_nm_per_s)
    if len(v) != 2 or not all(map(math.isfinite, v)):
        raise ValueError(
            f"drift_nm_per_s must be two finite numbers (vx, vy) in nm/s, got {drift_nm_per_s!r}"
        )
    if isinstance(drift_jumps, (int, np.integer)) and not isinstance(drift_jumps, bool):
        n = int(drift_jumps)
        if n < 0:
            raise ValueError("drift_jumps must be ≥ 0 when given as a number of random jumps")
        drift_jumps = [
            (
                float(rng.uniform(0.1, 0.9) * duration_s),
                *(rng.choice([-1, 1], 2) * rng.uniform(0.02, 0.1, 2) * field_nm).tolist(),
            )
            for _ in range(n)
        ]
    jumps = []
    for j in drift_jumps:
        j = tuple(float(x) for x in j)
        if len(j) != 3 or not all(map(math.isfinite, j)):
            raise ValueError(f"each drift jump must be (time_s, dx_nm, dy_nm), got {j!r}")
        jumps.append(j)
    return v, jumps


# --------------------------------------------------------------------------------------------
# Textures (static in the sample frame, sampled with sub-pixel drift)
# --------------------------------------------------------------------------------------------


def _unit_noise(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise with zero mean and unit standard deviation."""
    g = ndimage.gaussian_filter(
        rng.standard_normal(shape).astype(np.float32), sigma_px, mode="wrap"
    )
    return (g - g.mean()) / max(float(g.std()), 1e-12)


def _grain_texture(shape: tuple[int, int], grain_px: float, rng: np.random.Generator) -> np.ndarray:
    """Sparse dark nanograins on a light matrix, normalised to zero mean and unit std."""
    g = _unit_noise(shape, max(grain_px / 2, 0.5), rng)
    g = np.maximum(g - 0.8, 0.0)
    return (g - g.mean()) / max(float(g.std()), 1e-12)


def _film_texture(shape: tuple[int, int], grain_px: float, rng: np.random.Generator) -> np.ndarray:
    """Mottled fine grain of an amorphous film (band-pass noise), zero mean, unit std."""
    fine = _unit_noise(shape, max(grain_px, 0.5), rng)
    coarse = _unit_noise(shape, max(6 * grain_px, 3.0), rng)
    t = fine + 0.4 * coarse
    return (t - t.mean()) / t.std()


def _sample_shifted(
    tex: np.ndarray, pad: int, shift_px: tuple[float, float], out_shape: tuple[int, int]
) -> np.ndarray:
    """Bilinearly sample padded texture(s) ``tex[..., Y+2p, X+2p]`` for a drift of ``shift_px``.

    Output pixel (r, c) takes the texture at sample position (r − dy, c − dx) (padded index + pad).
    """
    h, w = out_shape
    sy, sx = pad - shift_px[1], pad - shift_px[0]
    iy, ix = math.floor(sy), math.floor(sx)
    fy, fx = sy - iy, sx - ix
    a = tex[..., iy : iy + h, ix : ix + w]
    b = tex[..., iy : iy + h, ix + 1 : ix + 1 + w]
    c = tex[..., iy + 1 : iy + 1 + h, ix : ix + w]
    d = tex[..., iy + 1 : iy + 1 + h, ix + 1 : ix + 1 + w]
    return (1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * c + fx * d)


# --------------------------------------------------------------------------------------------
# Geometry → per-object rasters
# --------------------------------------------------------------------------------------------


@dataclass
class _Raster:
    """One object rendered on its (unclipped) pixel window."""

    r0: int
    c0: int
    inside: np.ndarray  # bool: object covers the pixel centre
    cls: np.ndarray  # uint8: 0/1/2
    score: np.ndarray  # signed distance / half width (lower wins on overlaps)
    sd_nm: np.ndarray  # signed distance to the edge, nm (< 0 inside)
    tau_p: np.ndarray  # optical depth of pristine material
    tau_r: np.ndarray  # optical depth of reacted material
    diff: np.ndarray  # diffraction-contrast factor (≤ 1) on pristine material


def _window(
    xmin: float, xmax: float, ymin: float, ymax: float, drift: np.ndarray, nm: float, margin_px: int
) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Pixel window covering a sample-frame box; returns r0, c0 and the sample x, y grids."""
    c0 = math.floor((xmin + drift[0]) / nm) - margin_px
    c1 = math.ceil((xmax + drift[0]) / nm) + margin_px + 1
    r0 = math.floor((ymin + drift[1]) / nm) - margin_px
    r1 = math.ceil((ymax + drift[1]) / nm) + margin_px + 1
    x = np.arange(c0, c1) * nm - drift[0]
    y = np.arange(r0, r1) * nm - drift[1]
    return r0, c0, x[None, :], y[:, None]


def _diffraction_factor(
    u: np.ndarray,
    v: np.ndarray,
    thickness: np.ndarray,
    pristine: np.ndarray,
    size_nm: float,
    dec: _Decor,
    rp: RenderParams,
    t_s: float,
    nm: float,
) -> np.ndarray:
    """Bend contours (moving dark bands) and thickness fringes on pristine crystal, else 1."""
    f = np.ones(np.broadcast_shapes(u.shape, v.shape, thickness.shape), dtype=float)
    if not pristine.any():
        return f
    if rp.thickness_fringe_amp > 0:
        f = f - rp.thickness_fringe_amp * np.sin(np.pi * thickness / rp.extinction_distance_nm) ** 2
    sigma = max(rp.bend_contour_width_frac * size_nm, 1.0 * nm)
    for ang, spacing, off, speed in zip(
        dec.bend_angle, dec.bend_spacing_nm, dec.bend_offset_nm, dec.bend_speed_nm_s
    ):
        proj = u * math.cos(ang) + v * math.sin(ang) - (off + speed * t_s)
        dist = np.mod(proj + spacing / 2, spacing) - spacing / 2
        f = f * (1 - rp.bend_contour_amp * np.exp(-0.5 * (dist / sigma) ** 2))
    return np.where(pristine, f, 1.0)


def _raster_particle(
    spec: ParticleSpec,
    dec: _Decor,
    t_s: float,
    drift: np.ndarray,
    rp: RenderParams,
    nm: float,
    margin_px: int,
) -> _Raster:
    """Core–shell sphere: exact projected thicknesses of the pristine core and reacted shell."""
    p = float(spec.progress(t_s))
    radius = float(spec.diameter_nm(t_s)) / 2
    rough = spec.edge_roughness * p
    r_max = radius * (1 + rough * np.abs(dec.rough_a[0]).sum())
    cx, cy = spec.center_nm
    r0, c0, x, y = _window(cx - r_max, cx + r_max, cy - r_max, cy + r_max, drift, nm, margin_px)
    dx, dy = x - cx, y - cy
    r = np.hypot(dx, dy)
    if rough > 0:
        theta = np.arctan2(dy, dx)[..., None]
        rho = (dec.rough_a[0] * np.cos(dec.rough_q[0] * theta + dec.rough_phi[0])).sum(axis=-1)
        edge = radius * (1 + rough * rho)
    else:
        edge = np.full_like(r, radius)
    core = radius * (1 - p) ** (1 / 3)
    inside = r < edge
    pristine = r < core
    t_out = 2 * np.sqrt(np.maximum(edge**2 - r**2, 0.0))
    t_core = 2 * np.sqrt(np.maximum(core**2 - r**2, 0.0))
    mfp = rp.mfp_pristine_nm
    sd = r - edge
    return _Raster(
        r0,
        c0,
        inside,
        np.where(inside, np.where(pristine, 1, 2), 0).astype(np.uint8),
        sd / radius,
        sd,
        t_core * dec.orientation / mfp,
        (t_out - t_core) / (mfp * rp.mfp_reacted_ratio),
        _diffraction_factor(dx, dy, t_core, pristine, spec.diameter0_nm, dec, rp, t_s, nm),
    )


def _edge_profile(dec: _Decor, s: np.ndarray) -> np.ndarray:
    """Relative roughness of both wire edges at axial positions ``s`` (nm), shape (2, *s.shape).

    Evaluated on a fixed grid (nodes at multiples of a step, independent of the window) and
    interpolated linearly, so the geometry is identical in every frame.
    """
    step = float(2 * np.pi / dec.rough_q.max()) / 16
    k0, k1 = math.floor(float(s.min()) / step), math.ceil(float(s.max()) / step)
    grid = np.arange(k0, k1 + 1) * step
    prof = (
        dec.rough_a[..., None] * np.sin(dec.rough_q[..., None] * grid + dec.rough_phi[..., None])
    ).sum(axis=1)
    return np.stack([np.interp(s, grid, prof[i]) for i in range(2)])


def _raster_wire(
    spec: WireSpec,
    dec: _Decor,
    t_s: float,
    drift: np.ndarray,
    rp: RenderParams,
    nm: float,
    margin_px: int,
) -> _Raster:
    """Straight wire: reacted & swollen behind the front, pristine crystal ahead of it."""
    ux, uy = spec.axis
    cx, cy = spec.contact_nm
    xf = float(spec.front_position_nm(t_s))
    length = float(spec.length_nm(t_s))
    half_max = (
        spec.width1_nm / 2 * (1 + spec.edge_roughness * np.abs(dec.rough_a).sum(axis=1).max())
    )
    ex, ey = cx + ux * length, cy + uy * length
    px, py = abs(uy) * half_max, abs(ux) * half_max
    r0, c0, x, y = _window(
        min(cx, ex) - px, max(cx, ex) + px, min(cy, ey) - py, max(cy, ey) + py, drift, nm, margin_px
    )
    s = (x - cx) * ux + (y - cy) * uy
    n = -(x - cx) * uy + (y - cy) * ux
    g = spec.swell_progress(s, t_s, xf)
    half = (spec.width0_nm + (spec.width1_nm - spec.width0_nm) * g) / 2
    if spec.edge_roughness > 0:
        rho = _edge_profile(dec, s)
        up = half * (1 + spec.edge_roughness * g * rho[0])
        lo = -half * (1 + spec.edge_roughness * g * rho[1])
    else:
        up, lo = half, -half
    inside = (s >= 0) & (s < length) & (n < up) & (n > lo)
    sd = np.maximum.reduce([n - up, lo - n, -s, s - length])
    reacted = s < xf
    # anti-aliased edges: a flat thickness is weighted by the pixel's coverage (a round wire's
    # thickness already falls to 0 at its sides; only its end faces need it)
    if spec.cross_section == "round":
        hw, mid = (up - lo) / 2, (up + lo) / 2
        thick = 2 * np.sqrt(np.maximum(hw**2 - (n - mid) ** 2, 0.0))
        thick = thick * _coverage(np.maximum(-s, s - length), nm)
    else:
        thick = spec.belt_thickness_nm * (2 * half / spec.width0_nm) * _coverage(sd, nm)
    pristine = inside & ~reacted
    mfp = rp.mfp_pristine_nm
    return _Raster(
        r0,
        c0,
        inside,
        np.where(inside, np.where(reacted, 2, 1), 0).astype(np.uint8),
        sd / (spec.width0_nm / 2),
        sd,
        np.where(reacted, 0.0, thick) * dec.orientation / mfp,
        np.where(reacted, thick, 0.0) / (mfp * rp.mfp_reacted_ratio),
        _diffraction_factor(s, n, thick, pristine, spec.width0_nm, dec, rp, t_s, nm),
    )


def _coverage(sd_nm: np.ndarray, nm: float) -> np.ndarray:
    """Approximate fraction of a pixel covered by a shape with signed edge distance ``sd_nm``."""
    return np.clip(0.5 - sd_nm / nm, 0.0, 1.0)


def _clip(
    raster_r0: int, raster_c0: int, shape_win: tuple[int, int], shape: tuple[int, int]
) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Slices (in the window, in the image) of the overlap of a window with the image."""
    h, w = shape_win
    ra, rb = max(raster_r0, 0), min(raster_r0 + h, shape[0])
    ca, cb = max(raster_c0, 0), min(raster_c0 + w, shape[1])
    if ra >= rb or ca >= cb:
        return None
    win = (slice(ra - raster_r0, rb - raster_r0), slice(ca - raster_c0, cb - raster_c0))
    return win, (slice(ra, rb), slice(ca, cb))


def _na_source_tau(
    spec: WireSpec,
    harmonics: tuple,
    drift: np.ndarray,
    rp: RenderParams,
    nm: float,
    shape: tuple[int, int],
    margin_px: int,
):
    """Optical depth and signed distance of a wire's Na blob on the visible part of its window."""
    radius = spec.na_radius_nm
    if radius <= 0:
        return None
    bx, by = spec.na_center_nm
    k, a, phi = harmonics
    r_max = radius * (1 + 2 * a.sum())
    r0, c0, x, y = _window(bx - r_max, bx + r_max, by - r_max, by + r_max, drift, nm, margin_px)
    clip = _clip(r0, c0, (y.shape[0], x.shape[1]), shape)
    if clip is None:
        return None
    win, img = clip
    x, y = x[:, win[1]], y[win[0], :]
    dx, dy = x - bx, y - by
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)[..., None]
    contact = math.atan2(*spec.axis[::-1])  # rough outline fixed to R at the contact point
    rho = (a * (np.cos(k * theta + phi) - np.cos(k * contact + phi))).sum(axis=-1)
    edge = radius * (1 + rho)
    inner = edge * (1 - rp.na2o_skin_fraction)
    t_out = np.sqrt(np.maximum(1 - (r / edge) ** 2, 0.0))
    t_in = np.sqrt(np.maximum(1 - (r / inner) ** 2, 0.0)) * (1 - rp.na2o_skin_fraction)
    tau = rp.na_tau_center * (t_in + rp.na2o_tau_ratio * (t_out - t_in))
    return img, tau, r - edge


# --------------------------------------------------------------------------------------------
# Frame composition, image formation and detector
# --------------------------------------------------------------------------------------------


@dataclass
class _Context:
    """Everything fixed for a session that the per-frame rendering needs."""

    shape: tuple[int, int]
    nm: float
    rp: RenderParams
    background: str
    contrast: str
    specs: list[ObjectSpec]
    decors: list[_Decor]
    blobs: list[tuple | None]
    bubbles: list[dict]
    textures: np.ndarray  # (2, Y+2p, X+2p): film/liquid texture, nanograin texture
    pad: int
    illum_gain: np.ndarray  # illumination × pixel gain, mean 1
    hot: np.ndarray  # flat indices of hot pixels
    hot_level: np.ndarray  # their extra mean counts / dose
    dead: np.ndarray  # flat indices of dead pixels
    margin_px: int
    rows: np.ndarray = None  # flat row index of every pixel (float)
    cols: np.ndarray = None  # flat column index of every pixel (float)
    blob_cache: dict = None

    def __post_init__(self) -> None:
        rows, cols = np.indices(self.shape)
        self.rows, self.cols = rows.ravel().astype(float), cols.ravel().astype(float)
        self.blob_cache = {}


@dataclass
class _FrameTruth:
    signal: np.ndarray  # noiseless transmitted intensity (fraction of dose) before blur
    classes: np.ndarray
    instances: np.ndarray
    stats: list[dict]


def _compose(ctx: _Context, t_s: float, drift: np.ndarray) -> _FrameTruth:
    """Render all objects of one frame: optical-depth maps, masks and per-object counts."""
    shape = ctx.shape
    tau_p = np.zeros(shape)
    tau_r = np.zeros(shape)
    tau_o = np.zeros(shape)
    diff = np.ones(shape)
    sd = np.full(shape, np.inf)
    best = np.full(shape, np.inf)
    classes = np.zeros(shape, np.uint8)
    instances = np.zeros(shape, np.uint32)
    in_view: dict[int, float] = {}
    for spec, dec, blob in zip(ctx.specs, ctx.decors, ctx.blobs):
        if blob is not None:
            key = (spec.track_id, float(drift[0]), float(drift[1]))
            if key not in ctx.blob_cache:  # the blob is static: re-render only when drift changes
                ctx.blob_cache.clear()
                ctx.blob_cache[key] = _na_source_tau(
                    spec, blob, drift, ctx.rp, ctx.nm, shape, ctx.margin_px
                )
            na = ctx.blob_cache[key]
            if na is not None:
                img, tau, dist = na
                tau_o[img] += tau
                np.minimum(sd[img], dist, out=sd[img])
        render = _raster_particle if isinstance(spec, ParticleSpec) else _raster_wire
        ras = render(spec, dec, t_s, drift, ctx.rp, ctx.nm, ctx.margin_px)
        total = int(ras.inside.sum())
        clip = _clip(ras.r0, ras.c0, ras.inside.shape, shape)
        if clip is None:
            in_view[spec.track_id] = 0.0
            continue
        win, img = clip
        inside = ras.inside[win]
        in_view[spec.track_id] = float(inside.sum() / total) if total else 0.0
        tau_p[img] += ras.tau_p[win]
        tau_r[img] += ras.tau_r[win]
        diff[img] *= ras.diff[win]
        np.minimum(sd[img], ras.sd_nm[win], out=sd[img])
        take = inside & (ras.score[win] < best[img])
        best[img][take] = ras.score[win][take]
        instances[img][take] = spec.track_id
        classes[img][take] = ras.cls[win][take]
    textures = _sample_shifted(ctx.textures, ctx.pad, drift / ctx.nm, shape)
    signal = _transmission(ctx, tau_p, tau_r, tau_o, diff, sd, textures, t_s, drift)
    return _FrameTruth(
        signal, classes, instances, _object_stats(ctx, instances, classes, drift, in_view)
    )


def _transmission(ctx: _Context, tau_p, tau_r, tau_o, diff, sd, textures, t_s, drift) -> np.ndarray:
    """Noiseless detector signal as a fraction of the incident dose (before blur)."""
    rp = ctx.rp
    grain_tau = tau_r * np.maximum(1 + rp.grain_amp * textures[1], 0.0)
    obj = np.exp(-(tau_p + grain_tau + tau_o)) * diff
    fw = rp.fresnel_width_px
    fresnel = 1 + rp.fresnel_amp * np.exp(-((((sd / ctx.nm) - fw) / fw) ** 2)) if fw > 0 else 1.0
    if ctx.background == "carbon":
        grain_scale = min(1.0, math.sqrt(rp.film_grain_nm / ctx.nm))
        bg = math.exp(-rp.film_thickness_nm / rp.film_mfp_nm) * (
            1 + rp.film_texture_amp * grain_scale * textures[0]
        )
        level = math.exp(-rp.film_thickness_nm / rp.film_mfp_nm)
    elif ctx.background == "liquid":
        tau_liq = rp.liquid_thickness_nm / rp.liquid_mfp_nm
        bg = np.exp(-tau_liq * (1 + 0.03 * textures[0] - _bubble_relief(ctx, t_s, drift)))
        level = math.exp(-tau_liq)
    else:
        bg, level = 1.0, 1.0
    signal = obj * bg * fresnel
    if ctx.contrast == "dark-field":
        signal = rp.df_background + np.maximum(1 - signal, 0.0)
        level = rp.df_background + max(1 - level, 0.0)
    if ctx.background == "liquid":
        signal = rp.liquid_contrast * signal + (1 - rp.liquid_contrast) * level
    return np.maximum(signal, 0.0)


def _bubble_relief(ctx: _Context, t_s: float, drift: np.ndarray) -> np.ndarray | float:
    """Fraction of liquid missing where gas bubbles are (spherical voids growing with time)."""
    if not ctx.bubbles:
        return 0.0
    h, w = ctx.shape
    x = np.arange(w)[None, :] * ctx.nm - drift[0]
    y = np.arange(h)[:, None] * ctx.nm - drift[1]
    relief = np.zeros(ctx.shape)
    for b in ctx.bubbles:
        radius = b["r0_nm"] + b["growth_nm_s"] * max(t_s - b["start_s"], 0.0)
        if t_s < b["start_s"] or radius <= 0:
            continue
        rr = ((x - b["x_nm"]) ** 2 + (y - b["y_nm"]) ** 2) / radius**2
        relief += b["depth"] * np.sqrt(np.maximum(1 - rr, 0.0))
    return np.minimum(relief, 0.95)


def _object_stats(
    ctx: _Context,
    instances: np.ndarray,
    classes: np.ndarray,
    drift: np.ndarray,
    in_view: dict[int, float],
) -> list[dict]:
    """Area, centroid (drift-corrected) and reacted fraction of each visible object from its mask."""
    if not ctx.specs:
        return []
    n = max(s.track_id for s in ctx.specs) + 1
    on = np.flatnonzero(instances)
    lab = instances.ravel()[on]
    count = np.bincount(lab, minlength=n)
    sum_r = np.bincount(lab, weights=ctx.rows[on], minlength=n)
    sum_c = np.bincount(lab, weights=ctx.cols[on], minlength=n)
    reacted = np.bincount(lab, weights=classes.ravel()[on] == 2, minlength=n)
    out = []
    for spec in ctx.specs:
        k = spec.track_id
        if count[k] == 0:
            continue
        out.append(
            {
                "track_id": k,
                "px": int(count[k]),
                "x_nm": sum_c[k] / count[k] * ctx.nm - drift[0],
                "y_nm": sum_r[k] / count[k] * ctx.nm - drift[1],
                "reacted_fraction": reacted[k] / count[k],
                "in_view_fraction": in_view[k],
            }
        )
    return out


def _detect(
    ctx: _Context, signal: np.ndarray, dose: float, blur_px: float, rng: np.random.Generator
) -> np.ndarray:
    """Blur, illumination, Poisson shot noise at ``dose`` e⁻/px, read-out noise, hot/dead pixels."""
    if blur_px > 0.05:
        signal = ndimage.gaussian_filter(signal, blur_px, mode="nearest")
    counts = rng.poisson(signal * ctx.illum_gain * dose).astype(np.float32)
    if ctx.rp.readout_noise_e > 0:
        counts += (ctx.rp.readout_noise_e * rng.standard_normal(counts.shape)).astype(np.float32)
    flat = counts.reshape(-1)
    if ctx.hot.size:
        flat[ctx.hot] += rng.poisson(ctx.hot_level * dose).astype(np.float32)
    flat[ctx.dead] = 0.0
    return counts


def _illumination(shape: tuple[int, int], rp: RenderParams, rng: np.random.Generator) -> np.ndarray:
    """Beam illumination × pixel gain, normalised to a mean of 1 over the frame."""
    h, w = shape
    yy = (np.arange(h)[:, None] - (h - 1) / 2) / max(h, 1)
    xx = (np.arange(w)[None, :] - (w - 1) / 2) / max(w, 1)
    a = math.radians(rp.illum_angle_deg)
    illum = (1 + rp.illum_gradient * (xx * math.cos(a) + yy * math.sin(a))) * (
        1 - 2 * rp.illum_falloff * (xx**2 + yy**2)
    )
    illum = illum / illum.mean()
    gain = 1 + rp.gain_variation * rng.standard_normal(shape)
    out = illum * np.maximum(gain, 0.0)
    return out / out.mean()


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _validate_args(
    n_frames, shape, nm_per_px, fps, dose_e_per_px, scene, contrast, background, blur_px
) -> tuple[int, tuple[int, int]]:
    if isinstance(n_frames, bool) or int(n_frames) != n_frames or n_frames < 1:
        raise ValueError(f"n_frames must be an integer ≥ 1, got {n_frames!r}")
    try:
        shape = (int(shape[0]), int(shape[1]))
        ok = len(tuple(shape)) == 2 and min(shape) >= 8
    except (TypeError, IndexError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"shape must be two integers ≥ 8 (rows, columns) in px, got {shape!r}")
    _positive("nm_per_px", nm_per_px)
    _positive("fps", fps)
    _positive("dose_e_per_px", dose_e_per_px)
    _positive("blur_px", blur_px, allow_zero=True)
    if scene not in SCENES:
        raise ValueError(f"unknown scene {scene!r}; choose one of {SCENES}")
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; choose one of {CONTRASTS}")
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; choose one of {BACKGROUNDS}")
    return int(n_frames), shape


def _validate_objects(objects: Sequence[ObjectSpec]) -> list[ObjectSpec]:
    specs = list(objects)
    for s in specs:
        if not isinstance(s, (ParticleSpec, WireSpec)):
            raise TypeError(f"objects must be ParticleSpec or WireSpec, got {type(s).__name__}")
        s.validate()
    ids = [s.track_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"track_id values must be unique, got {ids}")
    return specs


def _resolve_seed(rng: Any) -> int:
    """A seed that reproduces the session (drawn from a Generator or fresh entropy if needed)."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(2**63 - 1))
    if rng is None:
        return int(np.random.SeedSequence().entropy % (2**63 - 1))
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return int(rng)
    raise TypeError(f"rng must be None, an int seed or a numpy Generator, got {type(rng).__name__}")


def _draw_bubbles(
    rp: RenderParams, field: tuple[float, float], duration_s: float, rng: np.random.Generator
) -> list[dict]:
    out = []
    side = min(field)
    for _ in range(int(rp.n_bubbles)):
        out.append(
            {
                "x_nm": float(rng.uniform(0, field[0])),
                "y_nm": float(rng.uniform(0, field[1])),
                "r0_nm": float(rng.uniform(0.02, 0.08) * side),
                "growth_nm_s": float(rng.uniform(0.0, 0.1) * side / max(duration_s, 1e-9)),
                "start_s": float(rng.uniform(0, 0.7) * duration_s),
                "depth": float(rng.uniform(0.3, 0.8)),
            }
        )
    return out


def _build_context(specs, rp, shape, nm, background, contrast, drift, duration_s, rng) -> _Context:
    decors = [_draw_decor(s, rp, rng) for s in specs]
    blobs = [_draw_blob_harmonics(rng) if isinstance(s, WireSpec) else None for s in specs]
    bubbles = (
        _draw_bubbles(rp, _field_nm(shape, nm), duration_s, rng) if background == "liquid" else []
    )
    pad = math.ceil(np.abs(drift).max(initial=0.0) / nm) + 2
    tshape = (shape[0] + 2 * pad, shape[1] + 2 * pad)
    if background == "carbon":
        bg_tex = _film_texture(tshape, rp.film_grain_nm / nm, rng)
    elif background == "liquid":
        bg_tex = _unit_noise(tshape, max(0.05 * min(shape), 2.0), rng)
    else:
        bg_tex = np.zeros(tshape, np.float32)
    grains = _grain_texture(tshape, rp.grain_size_nm / nm, rng)
    illum_gain = _illumination(shape, rp, rng)
    n_px = shape[0] * shape[1]
    n_hot = int(rng.binomial(n_px, min(rp.hot_pixel_fraction, 1.0)))
    n_dead = int(rng.binomial(n_px, min(rp.dead_pixel_fraction, 1.0)))
    picks = rng.choice(n_px, size=min(n_hot + n_dead, n_px), replace=False)
    margin = math.ceil(4 * rp.fresnel_width_px) + 2
    return _Context(
        shape,
        nm,
        rp,
        background,
        contrast,
        specs,
        decors,
        blobs,
        bubbles,
        np.stack([bg_tex, grains]).astype(np.float32),
        pad,
        illum_gain,
        picks[:n_hot],
        rng.uniform(3, 10, n_hot),
        picks[n_hot:],
        margin,
    )


def image_series(
    n_frames: int = 60,
    shape: tuple[int, int] = (256, 256),
    *,
    scene: str = "mixed",
    nm_per_px: float = 1.0,
    fps: float = 2.0,
    dose_e_per_px: float = 20.0,
    contrast: str = "bright-field",
    drift_nm_per_s: tuple[float, float] | None = (0.0, 0.0),
    drift_jumps: Sequence[tuple[float, float, float]] | int = (),
    blur_px: float = 1.0,
    background: str = "carbon",
    objects: Sequence[ObjectSpec] | None = None,
    rng: Any = None,
    reference_frames: int = 0,
    reference_age_s: float = 0.0,
    **options: Any,
) -> Session:
    """Render a synthetic bright-field (or dark-field) in situ TEM video with exact ground truth.

    Parameters
    ----------
    n_frames : int
        Number of frames (≥ 1).
    shape : (int, int)
        Frame shape (rows, columns), px.
    scene : {"particles", "wire", "mixed", "empty"}
        Random objects to draw (see :func:`random_scene`) when ``objects`` is None.
    nm_per_px : float
        Pixel size, nm/px.
    fps : float
        Frame rate, frames/s; ``time_s = frame / fps``.
    dose_e_per_px : float
        Mean incident electron dose per pixel and frame, e⁻/px.
    contrast : {"bright-field", "dark-field"}
        Dark-field inverts the contrast (scattered electrons: objects bright on a dark
        background), still with Poisson statistics.
    drift_nm_per_s : (float, float) or None
        Constant stage drift (vx, vy), nm/s; None draws a random slow drift (0–1.5 nm/s).
    drift_jumps : sequence of (time_s, dx_nm, dy_nm), or int
        Sudden stage moves; an int draws that many random jumps (2–10 % of the field per axis).
    blur_px : float
        Gaussian blur σ (point spread and partial coherence), px.
    background : {"carbon", "vacuum", "liquid"}
        Amorphous carbon film texture, plain vacuum, or a liquid cell (thick, blurry, low
        contrast, with growing gas bubbles).
    objects : list of ParticleSpec / WireSpec, optional
        Exact objects (track ids ≥ 1, unique); an empty list renders no object.
    rng : None, int or numpy.random.Generator
        Seed; the session is reproducible from ``params["seed"]``.
    reference_frames : int
        With k ≥ 1, also render ``Session.reference``: the mean of k frames taken at t = 0 (frame 0
        and k − 1 more with their own shot noise and beam flicker), as the first frames of a fast
        camera's recording, before the sample changes, averaged into the reference that two-channel
        segmentation models are given (:func:`tem_operando.segment.reference.mean_reference`).
        Drawn from a noise stream of its own: ``frames`` are the same whatever k.
    reference_age_s : float
        How long before frame 0 the reference's exposures are taken, s (≥ 0). 0: frame 0 and
        k − 1 more exposures of it. Δ > 0: k exposures of the scene at t = −Δ at frame 0's
        position (objects as they were then — pristine unless their onset is before −Δ — and
        bend contours where they were Δ earlier): a frame
        ``time_s`` into the session then sees a reference ``time_s + Δ`` old, as late frames of a
        long recording see the recording's first frames.
    **options
        Overrides of :class:`RenderParams` fields (e.g. ``readout_noise_e=0``,
        ``hot_pixel_fraction=0``, ``fresnel_amp=-0.1``); all others are random per session.

    Returns
    -------
    Session
        ``frames`` (T, Y, X) float32 counts; ``classes``/``instances`` masks drifted like the image;
        tables ``objects``, ``tracks``, ``fronts``, ``frame_table`` (see the module docstring and
        ``OBJECT_COLUMNS``, ``TRACK_COLUMNS``, ``FRONT_COLUMNS``, ``FRAME_COLUMNS``).

    Raises
    ------
    ValueError
        For out-of-range arguments, unknown scene/contrast/background/options, invalid specs.
    TypeError
        If ``rng`` is not None/int/Generator or an object is not a ParticleSpec/WireSpec.
    """
    n_frames, shape = _validate_args(
        n_frames, shape, nm_per_px, fps, dose_e_per_px, scene, contrast, background, blur_px
    )
    if isinstance(reference_frames, bool) or int(reference_frames) != reference_frames or reference_frames < 0:
        raise ValueError(f"reference_frames must be an integer ≥ 0, got {reference_frames!r}")
    ref_age = float(reference_age_s) if isinstance(reference_age_s, numbers.Real) else math.nan
    if isinstance(reference_age_s, bool) or not (math.isfinite(ref_age) and ref_age >= 0):
        raise ValueError(f"reference_age_s must be a finite number ≥ 0 (s), got {reference_age_s!r}")
    if ref_age > 0 and not reference_frames:
        raise ValueError("reference_age_s needs reference_frames ≥ 1 (it is the age of that reference)")
    nm, fps, dose = float(nm_per_px), float(fps), float(dose_e_per_px)
    seed = _resolve_seed(rng)
    time_s = np.arange(n_frames) / fps
    duration = max((n_frames - 1) / fps, 1.0 / fps)
    scene_rng, render_rng, drift_rng, ctx_rng, noise_rng, ref_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)
    )
    specs = _validate_objects(
        random_scene(scene, shape, nm, duration, scene_rng) if objects is None else objects
    )
    rp = _apply_options(random_render_params(render_rng), options)
    v, jumps = _check_drift(drift_nm_per_s, drift_jumps, duration, min(shape) * nm, drift_rng)
    drift = drift_trajectory(time_s, v, jumps)
    ctx = _build_context(specs, rp, shape, nm, background, contrast, drift, duration, ctx_rng)
    flicker = np.maximum(1 + rp.flicker * noise_rng.standard_normal(n_frames), 0.05)
    wobble_phase = noise_rng.uniform(0, 2 * np.pi)
    base_blur = math.hypot(blur_px, rp.liquid_blur_px) if background == "liquid" else blur_px
    blur = base_blur * (
        1
        + rp.focus_wobble * np.sin(2 * np.pi * time_s / max(rp.focus_period_s, 1e-6) + wobble_phase)
    )
    frames = np.empty((n_frames, *shape), np.float32)
    classes = np.empty((n_frames, *shape), np.uint8)
    instances = np.empty((n_frames, *shape), np.uint32)
    stats = []
    reference = None
    for i, t in enumerate(time_s):
        truth = _compose(ctx, float(t), drift[i])
        frames[i] = _detect(ctx, truth.signal, dose * flicker[i], float(blur[i]), noise_rng)
        classes[i], instances[i] = truth.classes, truth.instances
        stats.append(truth.stats)
        if i == 0 and reference_frames:  # k − 1 more exposures of the t = 0 scene, averaged with frame 0
            age = ref_age
            signal = truth.signal if age == 0 else _compose(ctx, -age, drift[0]).signal
            acc = frames[0].astype(np.float64) if age == 0 else np.zeros(shape)
            for _ in range(int(reference_frames) - (1 if age == 0 else 0)):
                fl = max(1 + rp.flicker * ref_rng.standard_normal(), 0.05)
                acc += _detect(ctx, signal, dose * fl, float(blur[0]), ref_rng)
            reference = (acc / int(reference_frames)).astype(np.float32)
    doses = dose * flicker
    objects_df = _objects_table(specs, stats, time_s, nm)
    params = _jsonable(
        {
            "generator": "tem_operando.synth.images.image_series",
            "seed": seed,
            "scene": scene,
            "n_frames": n_frames,
            "shape": list(shape),
            "nm_per_px": nm,
            "fps": fps,
            "dose_e_per_px": dose,
            "contrast": contrast,
            "drift_nm_per_s": list(v),
            "drift_jumps": [list(j) for j in jumps],
            "blur_px": float(blur_px),
            "background": background,
            "objects": [spec_to_dict(s) for s in specs],
            "render": asdict(rp),
            "options": dict(options),
            "bubbles": ctx.bubbles,
            "na_sources": [
                None
                if b is None
                else {"center_nm": list(s.na_center_nm), "radius_nm": s.na_radius_nm}
                for s, b in zip(specs, ctx.blobs)
            ],
            "reference_frames": int(reference_frames),
            "reference_age_s": ref_age,
            "n_hot_pixels": int(ctx.hot.size),
            "n_dead_pixels": int(ctx.dead.size),
        }
    )
    return Session(
        frames=frames,
        time_s=time_s,
        mode=np.full(n_frames, "image", dtype="<U11"),
        nm_per_px=nm,
        inv_nm_per_px=math.nan,
        dose_e_per_px=doses,
        classes=classes,
        instances=instances,
        objects=objects_df,
        tracks=_tracks_table(specs, objects_df),
        fronts=_fronts_table(specs, time_s),
        phases=pd.DataFrame(columns=["frame", "time_s", "best_phase", "amorphous_fraction"]),
        frame_table=_frame_table(time_s, drift, objects_df, doses),
        params=params,
        reference=reference,
    )


# --------------------------------------------------------------------------------------------
# Ground-truth tables
# --------------------------------------------------------------------------------------------


def _objects_table(
    specs: list[ObjectSpec], stats: list[list[dict]], time_s: np.ndarray, nm: float
) -> pd.DataFrame:
    by_id = {s.track_id: s for s in specs}
    rows = []
    for frame, (t, frame_stats) in enumerate(zip(time_s, stats)):
        for st in frame_stats:
            spec = by_id[st["track_id"]]
            if isinstance(spec, ParticleSpec):
                width = length = float(spec.diameter_nm(t))
                pristine = math.nan
            else:
                width = spec.max_width_nm(float(t))
                length = float(spec.length_nm(t))
                pristine = (
                    spec.width0_nm if spec.front_position_nm(t) < spec.max_front_nm else math.nan
                )
            rows.append(
                {
                    "frame": frame,
                    "time_s": float(t),
                    "track_id": spec.track_id,
                    "kind": spec.kind,
                    "x_nm": st["x_nm"],
                    "y_nm": st["y_nm"],
                    "area_nm2": st["px"] * nm * nm,
                    "width_nm": width,
                    "width_pristine_nm": pristine,
                    "length_nm": length,
                    "reacted_fraction": st["reacted_fraction"],
                    "in_view_fraction": st["in_view_fraction"],
                }
            )
    return _typed_frame(rows, OBJECT_COLUMNS, ints=("frame", "track_id"), strings=("kind",))


def _typed_frame(
    rows: list[dict], columns: list[str], ints: Sequence[str] = (), strings: Sequence[str] = ()
) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    for c in columns:
        if c in ints:
            df[c] = df[c].astype(np.int64)
        elif c in strings:
            df[c] = df[c].astype(object)
        else:
            df[c] = df[c].astype(float)
    return df


def _track_row(spec: ObjectSpec) -> dict:
    nan = math.nan
    if isinstance(spec, ParticleSpec):
        e = spec.width_expansion
        return {
            "width0_nm": spec.diameter0_nm,
            "width1_nm": spec.diameter1_nm,
            "swelling_rate_nm_s": spec.mean_swelling_rate_nm_s,
            "step_rate_nm_s": nan if spec.inert else spec.swelling_rate_nm_s,
            "onset_s": nan if spec.inert else spec.onset_s,
            "plateau_s": spec.plateau_s,
            "width_expansion_pct": 100 * e,
            "length_expansion_pct": 100 * e,
            "area_expansion_pct": 100 * ((1 + e) ** 2 - 1),
            "volume_expansion_pct": 100 * ((1 + e) ** 3 - 1),
            "front_velocity_nm_s": nan,
            "rate_law": None,
            "front_exponent_n": nan,
            "diffusion_coefficient_nm2_s": nan,
            "front_k_nm_per_sqrt_s": nan,
            "front_end_s": nan,
            "n_steps": 0 if spec.inert else spec.n_steps,
            "center_x_nm": spec.center_nm[0],
            "center_y_nm": spec.center_nm[1],
            "contact_x_nm": nan,
            "contact_y_nm": nan,
            "axis_angle_deg": nan,
            "length0_nm": spec.diameter0_nm,
        }
    ew, el = spec.width_expansion, spec.length_expansion
    law = spec.rate_law
    rate = nan if math.isinf(spec.swelling_rate_nm_s) else spec.swelling_rate_nm_s
    n_steps = spec.step_schedule()[0].size if law == "steps" else 1
    end = spec.front_end_s
    return {
        "width0_nm": spec.width0_nm,
        "width1_nm": spec.width1_nm,
        "swelling_rate_nm_s": rate,
        "step_rate_nm_s": rate,
        "onset_s": spec.onset_s,
        "plateau_s": spec.plateau_s,
        "width_expansion_pct": 100 * ew,
        "length_expansion_pct": 100 * el,
        "area_expansion_pct": 100 * ((1 + ew) * (1 + el) - 1),
        "volume_expansion_pct": 100 * ((1 + ew) ** 2 * (1 + el) - 1),
        "front_velocity_nm_s": spec.mean_front_velocity_nm_s,
        "rate_law": law,
        "front_exponent_n": {"linear": 1.0, "sqrt": 0.5}.get(law, nan),
        "diffusion_coefficient_nm2_s": spec.front_k_nm_per_sqrt_s**2 / 2 if law == "sqrt" else nan,
        "front_k_nm_per_sqrt_s": spec.front_k_nm_per_sqrt_s if law == "sqrt" else nan,
        "front_end_s": end if math.isfinite(end) else nan,
        "n_steps": n_steps,
        "center_x_nm": nan,
        "center_y_nm": nan,
        "contact_x_nm": spec.contact_nm[0],
        "contact_y_nm": spec.contact_nm[1],
        "axis_angle_deg": float(spec.angle_deg),
        "length0_nm": spec.length0_nm,
    }


def _tracks_table(specs: list[ObjectSpec], objects_df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for spec in specs:
        frames = objects_df.loc[objects_df["track_id"] == spec.track_id, "frame"]
        seen = (
            {
                "first_frame": int(frames.min()),
                "last_frame": int(frames.max()),
                "n_frames": int(frames.size),
            }
            if frames.size
            else {"first_frame": -1, "last_frame": -1, "n_frames": 0}
        )
        rows.append(
            dict(
                track_id=spec.track_id,
                kind=spec.kind,
                **seen,
                fracture_frame=math.nan,
                **_track_row(spec),
            )
        )
    return _typed_frame(
        rows,
        TRACK_COLUMNS,
        ints=("track_id", "first_frame", "last_frame", "n_frames", "n_steps"),
        strings=("kind", "rate_law"),
    )


def _fronts_table(specs: list[ObjectSpec], time_s: np.ndarray) -> pd.DataFrame:
    parts = []
    for spec in specs:
        if isinstance(spec, WireSpec):
            parts.append(
                pd.DataFrame(
                    {
                        "frame": np.arange(time_s.size),
                        "time_s": time_s,
                        "track_id": spec.track_id,
                        "front_position_nm": spec.front_position_nm(time_s),
                    }
                )
            )
    rows = pd.concat(parts, ignore_index=True).to_dict("records") if parts else []
    return _typed_frame(rows, FRONT_COLUMNS, ints=("frame", "track_id"))


def _frame_table(
    time_s: np.ndarray, drift: np.ndarray, objects_df: pd.DataFrame, doses: np.ndarray
) -> pd.DataFrame:
    counts = objects_df.groupby("frame").size().reindex(np.arange(time_s.size), fill_value=0)
    return pd.DataFrame(
        {
            "frame": np.arange(time_s.size),
            "time_s": time_s,
            "mode": "image",
            "drift_x_nm": drift[:, 0],
            "drift_y_nm": drift[:, 1],
            "n_objects": counts.to_numpy().astype(np.int64),
            "dose_e_per_px": doses,
        },
        columns=FRAME_COLUMNS,
    )
