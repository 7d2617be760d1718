"""tem-operando's desktop app: review and correct a results folder (qtpy + pyqtgraph).

The state lives in :class:`~tem_operando_gui.models.ReviewModel` (no Qt); widgets take the
model and connect to its signals. Every correction goes through
:mod:`tem_operando.results.corrections` (journaled before it is applied). Qt is imported only
when a widget module is.

>>> from tem_operando_gui import main      # doctest: +SKIP
>>> main(["out/session"])                 # doctest: +SKIP
"""

__all__ = ["MainWindow", "ReviewModel", "main"]


def __getattr__(name):
    if name in ("main", "MainWindow"):
        from . import app

        return getattr(app, name)
    if name == "ReviewModel":
        from .models import ReviewModel

        return ReviewModel
    raise AttributeError(name)
