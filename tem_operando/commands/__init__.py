"""Sub-commands of ``tem-operando``: one light module per command.

Each module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` (argparse only, no heavy
imports at module level) and ``run(args) -> int``. :mod:`tem_operando.cli` builds the parser
from :data:`COMMANDS` in this order.
"""

COMMANDS = ["info", "synth", "analyze", "batch", "train", "evaluate", "phases", "gui", "models"]
