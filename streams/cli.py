"""The ``cartwatch`` command: Faust's CLI (``cartwatch worker``...) plus cartwatch's own tools."""

import sys

from config.settings import SettingsError


def main() -> None:
    """Entry point of the ``cartwatch`` console script."""
    try:
        import streams.notifier.worker  # noqa: F401  (reminder agents if enabled; checks templates)
        from streams.app import app
    except SettingsError as exc:
        sys.exit(f"cartwatch: {exc}")
    if sys.argv[1:2] == ["worker"]:
        # Faust retries refused credentials and TLS failures forever; fail at once instead.
        from streams.app import settings
        from streams.kafka_check import KafkaAccessError, check_before_start

        try:
            check_before_start(settings)
        except KafkaAccessError as exc:
            sys.exit(f"cartwatch: {exc}")
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
    app.main()


if __name__ == "__main__":
    main()
