"""Background analysis: :func:`tem_operando.pipeline.analyze` in a QThread with progress signals."""

from __future__ import annotations

from qtpy import QtCore


class AnalyzeWorker(QtCore.QThread):
    """Runs the pipeline on a recording; emits ``progress(done, total)``, then ``done(folder)`` or ``failed(msg)``."""

    progress = QtCore.Signal(int, int)
    done = QtCore.Signal(str)
    failed = QtCore.Signal(str)

    def __init__(self, recording: str, out: str, model: str | None = "baseline", parent=None, **options):
        super().__init__(parent)
        self.recording, self.out, self.model_name, self.options = recording, out, model, options

    def run(self) -> None:  # runs in the worker thread
        try:
            from tem_operando.pipeline import AnalyzeOptions, analyze

            analyze(self.recording, self.out, AnalyzeOptions(model=self.model_name, **self.options),
                    progress=lambda d, n: self.progress.emit(int(d), int(n)), report=False)
        except Exception as exc:  # noqa: BLE001 - reported to the user in the window
            self.failed.emit(f"{type(exc).__name__}: {exc}")
            return
        self.done.emit(self.out)
