"""Exceptions with messages meant for users: each names the file and what is wrong."""

from __future__ import annotations

import os


class TemOperandoError(Exception):
    """Base class for errors that the command line reports as a one-line message."""


class RecordingError(TemOperandoError, ValueError):
    """A recording could not be opened or holds data we cannot analyse.

    Parameters
    ----------
    path : str or os.PathLike or None
        The file or folder concerned.
    problem : str
        What is wrong, in words a user understands (and, where useful, how to fix it).
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class CalibrationError(RecordingError):
    """The spatial or temporal calibration is missing, zero or not finite."""
