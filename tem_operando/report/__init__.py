"""Plots (PNG in ``plots/``) and the self-contained ``report.html`` of a results folder.

Everything here reads the results folder through :class:`~tem_operando.results.ResultStore`;
nothing is computed that the tables do not already hold (fits are redrawn from their
parameters or refitted with the same library functions for display only).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["build_report", "write_plots"]


def build_report(folder: str | Path, title: str | None = None) -> Path:
    """Write every plot into ``folder/plots`` and then ``folder/report.html``."""
    from .html import write_report

    write_plots(folder)
    return write_report(folder, title=title)


def write_plots(folder: str | Path) -> list[Path]:
    """Write the report's figures as PNG files; returns their paths."""
    from .figures import write_all

    return write_all(Path(folder))
