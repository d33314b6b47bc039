"""`cartwatch stack up | down | status`: a real Kafka broker and mail server on 127.0.0.1.

Settings come from the environment (see `cartwatch_dev.stack.settings.StackSettings.from_env`).
Expected failures (no Java, a busy port, a stack already running, ...) print one clear message
and exit with status 1 instead of a traceback.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from dataclasses import replace
from functools import wraps
from typing import ParamSpec, TypeVar

import click

from cartwatch_dev.stack.kafka import KafkaAccess
from cartwatch_dev.stack.lifecycle import StackState, down, status, up
from cartwatch_dev.stack.process import StackError
from cartwatch_dev.stack.settings import SettingsError, StackSettings

P = ParamSpec("P")
R = TypeVar("R")

# `status` exit codes after the LSB init-script convention (0 means all services run).
STATUS_DEAD, STATUS_NOT_RUNNING = 1, 3


def _friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn expected errors into a message on stderr and exit status 1."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (StackError, SettingsError, OSError) as exc:  # OSError: e.g. an unwritable dir
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


@click.group()
def stack() -> None:
    """Run a local Kafka broker and SMTP server for development and tests."""


@stack.command("up")
@click.option(
    "--secure",
    is_flag=True,
    help="Kafka 4.x: also open SASL_SSL (SCRAM-SHA-512, PLAIN) and SSL (mTLS) listeners "
    "[env CARTWATCH_STACK_SECURITY=on].",
)
@click.option(
    "--authorizer",
    is_flag=True,
    help="Enforce ACLs (StandardAuthorizer, deny without an ACL); implies --secure "
    "[env CARTWATCH_STACK_AUTHORIZER=on, which needs CARTWATCH_STACK_SECURITY=on].",
)
@click.option(
    "--reuse",
    is_flag=True,
    help="If a stack is already running in the stack directory, use it instead of failing "
    "(`make run` and `make demo` do).",
)
@_friendly_errors
def up_command(secure: bool, authorizer: bool, reuse: bool) -> None:
    """Start the stack and print how to point cartwatch at it."""
    settings = StackSettings.from_env()
    if secure or authorizer:
        settings = replace(
            settings,
            security=settings.security or secure or authorizer,  # ACLs need authentication
            authorizer=settings.authorizer or authorizer,
        )
    running = status(settings.stack_dir) if reuse else None
    if running is not None and running.services and all(s.alive() for s in running.services):
        click.echo(f"a stack is already running in {settings.stack_dir}: using it")
        state = running
    else:
        state = up(settings)
    _describe(state)
    click.echo("\nTo use it from this shell:")
    if state.bootstrap:
        brokers = ";".join(f"kafka://{server}" for server in state.bootstrap.split(","))
        click.echo(f"  export CARTWATCH_BROKER={shlex.quote(brokers)}")
    if state.smtp_address:
        host, _, port = state.smtp_address.rpartition(":")
        click.echo(f"  export CARTWATCH_SMTP_HOST={host}")
        click.echo(f"  export CARTWATCH_SMTP_PORT={port}")


@stack.command("down")
@_friendly_errors
def down_command() -> None:
    """Stop every process the stack started and remove its PID records."""
    settings = StackSettings.from_env()
    stopped = down(settings.stack_dir)
    if not stopped:
        click.echo(f"no stack recorded in {settings.stack_dir}; nothing to stop")
    for service, was_running in stopped:
        if was_running:
            click.echo(f"stopped {service.name} (pid {service.pid})")
        else:
            click.echo(
                f"{service.name} (pid {service.pid}) was not running any more "
                f"(crashed or killed); see {service.log}"
            )


@stack.command("status")
@_friendly_errors
def status_command() -> None:
    """Show what runs where; exit 0 if all is up, 1 if something died, 3 if nothing runs."""
    settings = StackSettings.from_env()
    state = status(settings.stack_dir)
    if state is None:
        click.echo(f"no stack running in {settings.stack_dir}")
        sys.exit(STATUS_NOT_RUNNING)
    _describe(state)
    if not all(service.alive() for service in state.services):
        click.echo("\nsome services are dead; run `cartwatch stack down` to clean up")
        sys.exit(STATUS_DEAD)


def _describe(state: StackState) -> None:
    click.echo(f"stack in {state.stack_dir}")
    for service in state.services:
        health = "alive" if service.alive() else "DEAD"
        click.echo(
            f"  {service.name:<10} pid {service.pid:<8} {service.address:<21} {health:<6} "
            f"log {service.log}"
        )
    if state.bootstrap:
        origin = "external cluster (CARTWATCH_BROKER)" if state.external_broker else "this stack"
        click.echo(f"Kafka bootstrap: {state.bootstrap} ({origin})")
    if state.kafka:
        _describe_kafka(state.kafka)
    if state.maildir:
        click.echo(f"SMTP: {state.smtp_address}, mail stored in Maildir {state.maildir}")


def _describe_kafka(access: KafkaAccess) -> None:
    """What a client needs per listener; file paths only, never a password."""
    click.echo(f"Broker: {access.broker}")
    for listener in access.listeners:
        note = f"  ({listener.note})" if listener.note else ""
        click.echo(f"  {listener.name:<10} {listener.address:<21} {listener.protocol}{note}")
    if access.ca_file:
        click.echo(f"  CA certificate:     {access.ca_file}")
    if access.client_cert_file:
        click.echo(f"  client certificate: {access.client_cert_file}")
    if access.client_key_file:
        click.echo(f"  client key:         {access.client_key_file}")
    for user, path in access.password_files.items():
        click.echo(f"  SASL user {user:<8} password in {path}")
    if access.authorizer:
        click.echo(
            "  ACLs enforced (no ACL: denied); super users: " + ", ".join(access.super_users)
        )


if __name__ == "__main__":
    stack()
