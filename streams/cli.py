"""The ``cartwatch`` command: Faust's CLI (``cartwatch worker``...) plus cartwatch's own tools.

The operator commands (``carts``, ``insights``, ``acls``) are the product's. The development
tools (``stack``, ``loadgen``, ``bench``, ``chaos``, ``demo``) are another distribution,
``cartwatch-dev`` (``devtools/``), which adds its commands through the ``cartwatch.commands``
entry points: a production install has neither their code nor their dependencies, and never
imports them.
"""

import os
import sys
from importlib.metadata import entry_points

from config.settings import SettingsError
from streams import collector
from streams.fatal import EXIT_CODE, FatalErrors, watcher

COMMANDS_GROUP = "cartwatch.commands"


def main() -> None:
    """Entry point of the ``cartwatch`` console script."""
    try:
        from streams.assembly import app  # every processor; checks the reminder templates
    except SettingsError as exc:
        sys.exit(f"cartwatch: {exc}")
    fatal = None
    if sys.argv[1:2] == ["worker"]:
        fatal = _guard_worker()
        collector.tune()
    from faust.cli.faust import cli

    from streams.acls_cli import acls
    from streams.operator.cli import carts, insights

    cli.add_command(carts)
    cli.add_command(insights)
    cli.add_command(acls)
    for command in entry_points(group=COMMANDS_GROUP):
        cli.add_command(command.load())
    try:
        app.main()
    finally:
        if fatal is not None and fatal.reason is not None:
            # The watcher stopped the worker: say why, as the last line, and exit non-zero
            # (without the interpreter's shutdown, whose collector logs about tasks the
            # stopped worker left behind would follow the line).
            sys.stdout.flush()
            sys.stderr.write(f"cartwatch: {fatal.reason}\n")
            sys.stderr.flush()
            os._exit(EXIT_CODE)


def _guard_worker() -> FatalErrors:
    """Faust retries refused credentials, TLS failures and refused ACLs forever: check them
    before the worker starts (exit with one line), and watch for them while it runs. A
    PostgreSQL read model that cannot be used stops the start the same way."""
    from streams.app import app, settings
    from streams.kafka_check import KafkaAccessError, check_before_start
    from streams.operator.backends import ReadModelUnavailable, check_read_model

    try:
        check_before_start(settings)
        check_read_model(settings.operator)
    except (KafkaAccessError, ReadModelUnavailable) as exc:
        sys.exit(f"cartwatch: {exc}")
    fatal = watcher(settings)
    app.conf.loghandlers = [*app.conf.loghandlers, fatal]
    return fatal


if __name__ == "__main__":
    main()
