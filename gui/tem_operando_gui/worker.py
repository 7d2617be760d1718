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

            options = dict(self.options)
            opts = AnalyzeOptions.from_parameters(options.pop("parameters", None), model=self.model_name, **options)
            analyze(self.recording, self.out, opts,
                    progress=lambda d, n: self.progress.emit(int(d), int(n)), report=False)
        except Exception as exc:  # noqa: BLE001 - reported to the user in the window
            self.failed.emit(f"{type(exc).__name__}: {exc}")
            return
        self.done.emit(self.out)


class RetrainWorker(QtCore.QThread):
    """Fine-tunes the network on a results folder's corrected frames (:func:`tem_operando.pipeline.retrain.retrain`).

    Emits ``progress(step, total)`` and ``log(line)`` while it runs, then ``done(model_path)``,
    ``cancelled(msg)`` (after :meth:`cancel`; the checkpoint stays, so a new run resumes) or ``failed(msg)``.
    """

    progress = QtCore.Signal(int, int)
    log = QtCore.Signal(str)
    done = QtCore.Signal(str)
    cancelled = QtCore.Signal(str)
    failed = QtCore.Signal(str)

    def __init__(self, results: list[str], out: str, options=None, parent=None):
        super().__init__(parent)
        self.results, self.out, self.options = list(results), out, options
        self._cancel = False

    def cancel(self) -> None:
        """Ask the training to stop after the current step (thread-safe: a flag polled every step)."""
        self._cancel = True

    def run(self) -> None:  # runs in the worker thread
        try:
            from tem_operando.pipeline.retrain import retrain
            from tem_operando.segment.train import TrainingCancelled

            try:
                path = retrain(self.results, self.out, self.options, progress=False, log=self.log.emit,
                               callback=lambda s, n: self.progress.emit(int(s), int(n)),
                               cancel=lambda: self._cancel)
            except TrainingCancelled as exc:
                self.cancelled.emit(str(exc))
                return
        except Exception as exc:  # noqa: BLE001 - reported to the user in the window
            self.failed.emit(f"{type(exc).__name__}: {exc}")
            return
        self.done.emit(str(path))
