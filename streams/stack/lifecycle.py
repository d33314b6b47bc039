"""`up`, `down` and `status` of a stack, tracked in `<stack dir>/stack.json`.

The state file is rewritten after every service that starts, so even an interrupted `up`
leaves a record `down` can clean up. Both `up` and `down` hold a lock on the stack directory,
so two commands never race on the same stack.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from config.stack import LOCALHOST, StackSettings
from streams.stack.brokers import broker_flavour
from streams.stack.kafka import KafkaAccess, broker_reachable, require_java
from streams.stack.process import ServiceProcess, StackError, ensure_ports_free, locked, stop
from streams.stack.smtp import start_smtp

STATE_FILE = "stack.json"


@dataclass(frozen=True)
class StackState:
    """What a stack runs and how clients reach it."""

    stack_dir: Path
    bootstrap: str | None
    """Kafka bootstrap servers; None if this stack was started without any broker."""
    external_broker: bool
    smtp_address: str | None = None
    maildir: Path | None = None
    services: tuple[ServiceProcess, ...] = field(default=())
    kafka: KafkaAccess | None = None
    """How clients reach the stack's own broker (None with an external cluster or none)."""

    @property
    def state_file(self) -> Path:
        return self.stack_dir / STATE_FILE

    def save(self) -> None:
        data = {
            "bootstrap": self.bootstrap,
            "external_broker": self.external_broker,
            "smtp_address": self.smtp_address,
            "maildir": str(self.maildir) if self.maildir else None,
            "services": [service.to_json() for service in self.services],
            "kafka": self.kafka.to_json() if self.kafka else None,
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.state_file)  # atomic: a reader never sees half a file

    @classmethod
    def load(cls, stack_dir: Path) -> StackState | None:
        try:
            data = json.loads((stack_dir / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StackError(f"cannot read {stack_dir / STATE_FILE}: {exc}") from exc
        return cls(
            stack_dir=stack_dir,
            bootstrap=data["bootstrap"],
            external_broker=data["external_broker"],
            smtp_address=data["smtp_address"],
            maildir=Path(data["maildir"]) if data["maildir"] else None,
            services=tuple(ServiceProcess.from_json(s) for s in data["services"]),
            kafka=KafkaAccess.from_json(data["kafka"]) if data.get("kafka") else None,
        )


def up(settings: StackSettings) -> StackState:
    """Start the services `settings` asks for; on any failure stop what was started."""
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    with locked(settings.stack_dir):
        _refuse_if_running(settings.stack_dir)
        _check_before_start(settings)
        state = StackState(
            stack_dir=settings.stack_dir,
            bootstrap=settings.bootstrap if settings.run_kafka or settings.broker else None,
            external_broker=not settings.run_kafka,
        )

        def record(service: ServiceProcess) -> None:
            nonlocal state
            state = _record(state, service)

        try:
            if settings.run_kafka:
                access = broker_flavour(settings).start(settings, record)
                state = replace(state, kafka=access)
                state.save()
            if settings.run_smtp:
                smtp_address = f"{LOCALHOST}:{settings.smtp_port}"
                state = replace(state, smtp_address=smtp_address, maildir=settings.maildir)
                record(start_smtp(settings))
        except BaseException:  # also Ctrl-C: never leave half a stack running
            _stop_all(state)
            raise
        return state


def down(stack_dir: Path) -> list[tuple[ServiceProcess, bool]]:
    """Stop every service recorded in `stack_dir`, newest first, and remove the state file.

    Returns each service with whether it was still running (False: it had died already).
    """
    if not stack_dir.is_dir():
        return []
    with locked(stack_dir):
        state = StackState.load(stack_dir)
        return _stop_all(state) if state else []


def status(stack_dir: Path) -> StackState | None:
    """The stack recorded in `stack_dir`, or None if none was started there."""
    return StackState.load(stack_dir)


def _record(state: StackState, service: ServiceProcess) -> StackState:
    state = replace(state, services=(*state.services, service))
    state.save()
    return state


def _stop_all(state: StackState) -> list[tuple[ServiceProcess, bool]]:
    # Newest first: the broker deregisters from ZooKeeper before ZooKeeper stops.
    results = [(service, stop(service)) for service in reversed(state.services)]
    state.state_file.unlink(missing_ok=True)
    return results


def _refuse_if_running(stack_dir: Path) -> None:
    state = StackState.load(stack_dir)
    if state is None:
        return
    alive = [s for s in state.services if s.alive()]
    if not alive:
        _stop_all(state)  # a stale record of a crashed stack: clean up and start afresh
        return
    listing = ", ".join(f"{s.name} pid {s.pid} on {s.address}" for s in alive)
    raise StackError(
        f"a stack is already running in {stack_dir} ({listing}); "
        "use it, or run `cartwatch stack down` first"
    )


def _check_before_start(settings: StackSettings) -> None:
    if not (settings.run_kafka or settings.run_smtp):
        raise StackError(
            "nothing to start: CARTWATCH_BROKER and CARTWATCH_SMTP_HOST both point elsewhere"
        )
    ports = {}
    if settings.run_kafka:
        require_java(os.environ)  # before a first start downloads 60 MB it could not run
        flavour = broker_flavour(settings)
        flavour.check_before_start(settings)
        ports.update(flavour.ports(settings))
    elif settings.broker and not broker_reachable(settings.broker):
        raise StackError(
            f"no Kafka broker answers at CARTWATCH_BROKER ({settings.broker}); start that "
            "cluster, or unset CARTWATCH_BROKER to let the stack run its own broker"
        )
    if settings.run_smtp:
        ports["CARTWATCH_SMTP_PORT"] = settings.smtp_port
    ensure_ports_free(ports)
