"""The ``cartwatch`` command: Faust's CLI (``cartwatch worker``...) plus cartwatch's own tools."""

import sys

from config.settings import SettingsError


def main() -> None:
    """Entry point of the ``cartwatch`` console script."""
    try:
        from streams.assembly import app  # every processor; checks the reminder templates
    except SettingsError as exc:
        sys.exit(f"cartwatch: {exc}")
    from faust.cli.faust import cli

    from streams.bench.cli import bench
    from streams.chaos.cli import chaos
    from streams.demo import demo
    from streams.loadgen.cli import loadgen
    from streams.operator.cli import carts, insights
    from streams.stack.cli import stack

    cli.add_command(stack)
    cli.add_command(loadgen)
    cli.add_command(carts)
    cli.add_command(insights)
    cli.add_command(bench)
    cli.add_command(chaos)
    cli.add_command(demo)
    app.main()


if __name__ == "__main__":
    main()
