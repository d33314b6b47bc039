"""The ``cartwatch`` command: Faust's CLI (``cartwatch worker``...) plus cartwatch's own tools."""

import os
import sys

from config.settings import SettingsError
from streams.kafka_fatal import EXIT_CODE, FatalKafkaErrors, watcher


def main() -> None:
    """Entry point of the ``cartwatch`` console script."""
    try:
        import streams.notifier.worker  # noqa: F401  (reminder agents if enabled; checks templates)
        from streams.app import app
    except SettingsError as exc:
        sys.exit(f"cartwatch: {exc}")
    fatal = _guard_worker() if sys.argv[1:2] == ["worker"] else None
    from faust.cli.faust import cli

    import streams.operator.web  # noqa: F401  (registers the operator API and read model)
    import streams.pipeline  # noqa: F401  (registers the agents, tables and timers)
    from streams.acls_cli import acls
    from streams.bench.cli import bench
    from streams.chaos.cli import chaos
    from streams.loadgen.cli import loadgen
    from streams.operator.cli import carts, insights
    from streams.stack.cli import stack

    cli.add_command(stack)
    cli.add_command(loadgen)
    cli.add_command(carts)
    cli.add_command(insights)
    cli.add_command(bench)
    cli.add_command(chaos)
    cli.add_command(acls)
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


def _guard_worker() -> FatalKafkaErrors:
    """Faust retries refused credentials, TLS failures and refused ACLs forever: check them
    before the worker starts (exit with one line), and watch for them while it runs."""
    from streams.app import app, settings
    from streams.kafka_check import KafkaAccessError, check_before_start

    try:
        check_before_start(settings)
    except KafkaAccessError as exc:
        sys.exit(f"cartwatch: {exc}")
    fatal = watcher(settings)
    app.conf.loghandlers = [*app.conf.loghandlers, fatal]
    return fatal


if __name__ == "__main__":
    main()
