"""``report.html``: one self-contained page (images inlined) from a results folder.

The report reads the results folder only through :class:`~tem_operando.results.ResultStore`
and the PNG figures in ``plots/``; it computes nothing new. Every number carries its unit and,
where the tables have one, its 95% confidence half-width.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .. import schema
from ..results import ResultStore, atomic_write_bytes

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em} h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} td,th{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left} figure{margin:.8em 0} figcaption{font-size:.85em;color:#555}
img{max-width:100%} .muted{color:#777} .status-partial{color:#b00;font-weight:bold}
"""


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            return "–"
        return f"{float(value):.{digits}g}"
    return html.escape(str(value))


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _figure(path: Path, caption: str) -> str:
    return f"<figure>{_img(path)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _with_ci(value, ci) -> str:
    v = _fmt(value)
    if v == "–":
        return v
    c = _fmt(ci, 2)
    return v if c == "–" else f"{v} ± {c}"


def tracks_table(tracks: pd.DataFrame) -> str:
    """The tracks table with units in the header and ± 95% CI on rates."""
    if tracks.empty:
        return '<p class="muted">No tracked objects.</p>'
    cols = [("track_id", "track", ""), ("kind", "kind", ""), ("n_frames", "frames", ""),
            ("width0_nm", "width₀", "nm"), ("width1_nm", "width₁", "nm"),
            (("swelling_rate_nm_s", "swelling_rate_ci95_nm_s"), "swelling rate", "nm/s"),
            ("width_expansion_pct", "width exp.", "%"), ("length_expansion_pct", "length exp.", "%"),
            ("area_expansion_pct", "area exp.", "%"), ("volume_expansion_pct", "volume exp.", "%"),
            (("front_velocity_nm_s", "front_velocity_ci95_nm_s"), "front velocity", "nm/s"),
            ("front_exponent_n", "n (x∝tⁿ)", ""), ("diffusion_coefficient_nm2_s", "D_eff", "nm²/s"),
            ("n_steps", "steps", ""), ("fracture_frame", "fracture frame", ""),
            ("corrections", "corrections", "")]
    head = "".join(f"<th>{html.escape(t)}{' [' + u + ']' if u else ''}</th>" for _, t, u in cols)
    rows = []
    for _, r in tracks.iterrows():
        cells = []
        for key, _, _ in cols:
            if isinstance(key, tuple):
                cells.append(f"<td>{_with_ci(r.get(key[0]), r.get(key[1]))}</td>")
            else:
                v = r.get(key)
                cells.append(f"<td>{html.escape(str(v or '–'))}</td>" if key == "corrections" else f"<td>{_fmt(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def population_table(tracks: pd.DataFrame) -> str:
    """Mean ± standard deviation over all particles (single particles are rarely representative)."""
    parts = tracks[tracks.get("kind", pd.Series(dtype=str)) == "particle"] if not tracks.empty else tracks
    if parts.empty:
        return ""
    rows = []
    for col, label, unit in (("swelling_rate_nm_s", "swelling rate", "nm/s"),
                             ("width_expansion_pct", "width expansion", "%"),
                             ("volume_expansion_pct", "volume expansion", "%")):
        v = parts[col].dropna().to_numpy(float)
        if len(v):
            rows.append(f"<tr><td class='l'>{label} [{unit}]</td><td>{len(v)}</td><td>{_fmt(v.mean())}</td>"
                        f"<td>{_fmt(v.std(ddof=1) if len(v) > 1 else float('nan'))}</td>"
                        f"<td>{_fmt(np.median(v))}</td></tr>")
    if not rows:
        return ""
    return ("<h3>Population of particles</h3><table><tr><th class='l'>quantity</th><th>n</th><th>mean</th>"
            f"<th>std</th><th>median</th></tr>{''.join(rows)}</table>")


def phases_summary(phases: pd.DataFrame) -> str:
    if phases.empty:
        return '<p class="muted">No diffraction frames.</p>'
    counts = phases["best_phase"].value_counts()
    rows = "".join(f"<tr><td class='l'>{html.escape(str(k))}</td><td>{v}</td></tr>" for k, v in counts.items())
    return f"<table><tr><th class='l'>best phase</th><th>frames</th></tr>{rows}</table>"


def provenance_section(summary: dict, tracks: pd.DataFrame, phases: pd.DataFrame) -> str:
    """Where the numbers come from: the model (name, sha256) and the corrections applied."""
    corr = summary.get("corrections") or {}
    ids = corr.get("active_ids") or []
    rows = [("segmentation model", summary.get("model")), ("model sha256", summary.get("model_sha256")),
            ("phase library", ", ".join(summary.get("phases", []) or []) or "–"),
            ("corrections applied", f"{len(ids)} of {corr.get('entries', 0)} journal entries"
                                    + (f" (ids {', '.join(map(str, ids))})" if ids else "")),
            ("frames corrected by hand", ", ".join(map(str, corr.get("corrected_frames") or [])) or "–"),
            ("frames excluded", ", ".join(map(str, corr.get("excluded_frames") or [])) or "–")]
    n_tr = int((tracks["corrections"] != "").sum()) if "corrections" in tracks else 0
    n_ph = int((phases["corrections"] != "").sum()) if "corrections" in phases else 0
    rows.append(("rows changed by corrections", f"{n_tr} of {len(tracks)} tracks, {n_ph} of {len(phases)} phase frames"))
    meta = "".join(f"<tr><th class='l'>{html.escape(k)}</th><td class='l'>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    return ("<h2>Provenance</h2><p class='muted'>Every row of tracks.csv names its model (columns model, "
            "model_sha256) and the ids of the corrections.jsonl entries behind it (column corrections); "
            f"so does every row of phases.csv.</p><table>{meta}</table>")


def _in_force(summary: dict, calibration: dict, key: str):
    """A calibration value for the report's table: the one in force, "(analysed with X)" after it when the
    user's correction changed it."""
    value, analysed = calibration[key], summary.get(key)
    if not math.isfinite(value):
        return analysed
    if analysed is not None and not math.isclose(float(analysed), value):
        return f"{_fmt(value)} (corrected; analysed with {_fmt(analysed)})"
    return value


def write_report(folder: str | Path, title: str | None = None) -> Path:
    """Write ``report.html`` for a results folder from its tables and ``plots/*.png``.

    Returns the report's path. Figures named in :data:`FIGURE_ORDER` appear in that order with
    their captions; any other PNG in ``plots/`` follows.
    """
    store = ResultStore(folder)
    summary = store.read_summary()
    calibration = store.calibration(summary)
    tracks = store.read_table("tracks")
    phases = store.read_table("phases")
    frames = store.read_table("frames")
    plots = Path(folder) / "plots"
    pngs = sorted(plots.glob("*.png")) if plots.is_dir() else []

    status = summary.get("status", "missing")
    rows = [("input", summary.get("input")), ("input sha256", str(summary.get("input_sha256", ""))[:16] + "…"),
            ("frames", summary.get("frames")), ("image / diffraction frames",
                                                f"{summary.get('n_image_frames', '–')} / {summary.get('n_diffraction_frames', '–')}"),
            ("frame rate [fps]", _in_force(summary, calibration, "fps")),
            ("nm per px", _in_force(summary, calibration, "nm_per_px")),
            ("1/nm per px", _in_force(summary, calibration, "inv_nm_per_px")), ("model", summary.get("model")),
            ("model sha256", str(summary.get("model_sha256", ""))[:16] + "…"),
            ("phase library", ", ".join(summary.get("phases", []) or [])),
            ("analysed every n-th image frame", summary.get("every_nth", 1)),
            ("elapsed [s]", summary.get("elapsed_s")), ("software", summary.get("software_version")),
            ("status", status)]
    meta = "".join(f"<tr><th class='l'>{html.escape(k)}</th><td class='l'>{_fmt(v)}</td></tr>" for k, v in rows)

    body = [f"<h1>{html.escape(title or 'tem-operando report')}</h1>"]
    if status != "complete":
        body.append(f'<p class="status-partial">This run is {html.escape(status)}: results are incomplete.</p>')
    body.append(f"<h2>Recording</h2><table>{meta}</table>")
    section_of = {"overlay": "Recording", "swelling": "Swelling", "width": "Swelling", "front": "Reaction fronts",
                  "kymograph": "Reaction fronts", "phase": "Phases", "profile": "Phases", "waterfall": "Phases",
                  "electrochem": "Experiment context", "dose": "Experiment context"}
    sections: dict[str, list[str]] = {}
    for p in pngs:
        sec = next((s for k, s in section_of.items() if p.stem.startswith(k)), "Other figures")
        sections.setdefault(sec, []).append(_figure(p, p.stem.replace("_", " ")))
    body += sections.pop("Recording", [])
    body.append("<h2>Swelling and expansion</h2>" + tracks_table(tracks) + population_table(tracks))
    body += sections.pop("Swelling", [])
    body.append("<h2>Reaction fronts</h2>")
    body += sections.pop("Reaction fronts", []) or ['<p class="muted">No wire with a reaction front.</p>']
    body.append("<h2>Phases</h2>" + phases_summary(phases))
    body += sections.pop("Phases", [])
    ctx = sections.pop("Experiment context", [])
    if ctx:
        body.append("<h2>Experiment context</h2>")
        body += ctx
    for sec, figs in sections.items():
        body.append(f"<h2>{html.escape(sec)}</h2>")
        body += figs
    body.append(provenance_section(summary, tracks, phases))
    if not frames.empty:
        units = schema.units("frames")
        body.append(f"<p class='muted'>{len(frames)} frames; drift in {units['drift_x_nm']}; "
                    "tables: frames.csv, objects.csv, tracks.csv, fronts.csv, phases.csv, rings.csv.</p>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title or 'tem-operando')}"
            f"</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    out = Path(folder) / "report.html"
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
