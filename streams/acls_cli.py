"""``cartwatch acls``: the minimal Kafka ACLs of the current configuration, as a table and as
``kafka-acls.sh`` commands an administrator can run (``streams.kafka_access`` says why each)."""

from __future__ import annotations

import shlex

import click

from config.bootstrap import parse_bootstrap
from config.settings import Settings, SettingsError, load_settings
from streams.kafka_access import OPERATIONS, Grant, grants


def default_principal(settings: Settings) -> str:
    """The principal the broker sees for this configuration, as far as it can be known here."""
    if settings.kafka.sasl_username:
        return f"User:{settings.kafka.sasl_username}"
    return "User:cartwatch"


def table(rows: list[Grant]) -> str:
    """The grants as a Markdown table (the README shows the same)."""
    lines = ["| role | resource | name | operations | why |", "|---|---|---|---|---|"]
    lines += [f"| {g.role} | {g.resource} | `{g.name}` | {', '.join(g.operations)} | {g.why} |"
              for g in rows]
    return "\n".join(lines)


def commands(rows: list[Grant], principal: str, bootstrap: str) -> list[str]:
    """One ``kafka-acls.sh --add`` per resource, with every operation any role needs on it."""
    merged: dict[tuple[str, str], list[str]] = {}
    for grant in rows:
        operations = merged.setdefault((grant.resource, grant.name), [])
        operations += [op for op in grant.operations if op not in operations]
        operations.sort(key=OPERATIONS.index)
    out = []
    for (resource, name), operations in merged.items():
        argv = ["kafka-acls.sh", "--bootstrap-server", bootstrap,
                "--command-config", "admin.properties", "--add",
                "--allow-principal", principal]
        for operation in operations:
            argv += ["--operation", operation]
        argv += [f"--{resource}", name]
        out.append(shlex.join(argv))
    return out


@click.command("acls")
@click.option("--principal", default=None,
              help="The principal cartwatch connects as [default: User:<kafka.sasl_username>, "
              "else User:cartwatch; with mTLS, the certificate's mapped name].")
@click.option("--create-topics/--no-create-topics", default=True, show_default=True,
              help="Whether the workers create missing topics (CREATE on each) or every topic "
              "is created beforehand.")
@click.option("--table-only", is_flag=True, help="Print the table, not the commands.")
def acls(principal: str | None, create_topics: bool, table_only: bool) -> None:
    """Print the minimal ACLs per role (pipeline, notifier, read model) for this configuration.

    No cluster-wide permission is needed: READ and WRITE imply DESCRIBE, and CREATE on each
    topic (not on the cluster) lets the workers create what is missing.
    """
    try:
        settings = load_settings()
        bootstrap = parse_bootstrap(settings.broker)
    except (SettingsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    rows = grants(settings, create_topics=create_topics)
    principal = principal or default_principal(settings)
    roles = sorted({row.role for row in rows}, key=["pipeline", "notifier", "read model"].index)
    click.echo(f"# ACLs for {principal}: app_id {settings.app_id!r}, roles {', '.join(roles)}"
               + ("" if create_topics else f"; topics created beforehand with "
                  f"{settings.partitions} partitions each"))
    click.echo(table(rows))
    if table_only:
        return
    click.echo("")
    click.echo("# admin.properties: the connection settings of an administrator "
               "(security.protocol, sasl.*, ssl.*)")
    for line in commands(rows, principal, bootstrap):
        click.echo(line)
