"""The ``cartwatch`` command: Faust's CLI (``cartwatch worker``...) plus cartwatch's own tools.

The operator commands (``carts``, ``insights``) are the product's. The development tools
(``stack``, ``loadgen``, ``bench``, ``chaos``, ``demo``) are another distribution,
``cartwatch-dev`` (``devtools/``), which adds its commands through the ``cartwatch.commands``
entry points: a production install has neither their code nor their dependencies, and never
imports them.
"""

import sys
from importlib.metadata import entry_points

from config.settings import SettingsError

COMMANDS_GROUP = "cartwatch.commands"


def main() -> None:
    """Entry point of the ``cartwatch`` console script."""
    try:
        from streams.assembly import app  # every processor; checks the reminder templates
    except SettingsError as exc:
        sys.exit(f"cartwatch: {exc}")
    from faust.cli.faust import cli

    from streams.operator.cli import carts, insights

    cli.add_command(carts)
    cli.add_command(insights)
    for command in entry_points(group=COMMANDS_GROUP):
        cli.add_command(command.load())
    app.main()


if __name__ == "__main__":
    main()
