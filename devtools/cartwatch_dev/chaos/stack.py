"""A private local stack whose broker a scenario may stop and restart, or cut off.

Restarting a broker other people use would break their work, so the broker-restart scenario
always runs on a stack it starts itself, on free ports in its own directory. The network
scenarios need one too: their broker has a second listener advertised at a fault-injecting
proxy (``proxied=True``), which a shared broker does not have.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from cartwatch_dev.chaos.deployment import free_port
from cartwatch_dev.chaos.proxy import FaultProxy
from cartwatch_dev.stack import StackState, down, up
from cartwatch_dev.stack.brokers import broker_flavour
from cartwatch_dev.stack.process import stop
from cartwatch_dev.stack.settings import ProxiedListener, StackSettings
from cartwatch_dev.stack.smtp import start_smtp


@dataclass(frozen=True)
class MailSink:
    """An SMTP server that stores what it receives in a Maildir (the stack's)."""

    host: str
    port: int
    maildir: Path


class PrivateStack:
    """Kafka (and optionally SMTP) on free 127.0.0.1 ports in ``stack_dir``; use as a context."""

    def __init__(self, stack_dir: Path, *, kafka: bool = True, smtp: bool = False,
                 proxied: bool = False) -> None:
        """``proxied``: the broker also listens for workers behind ``self.proxy``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARTWATCH_")}
        env.update(
            CARTWATCH_STACK_DIR=str(stack_dir),
            CARTWATCH_KAFKA_PORT=str(free_port()),
            CARTWATCH_ZOOKEEPER_PORT=str(free_port()),
            CARTWATCH_KAFKA_CONTROLLER_PORT=str(free_port()),
            CARTWATCH_KAFKA_SASL_SSL_PORT=str(free_port()),
            CARTWATCH_KAFKA_SSL_PORT=str(free_port()),
            CARTWATCH_SMTP_PORT=str(free_port()),
        )
        self.settings = replace(StackSettings.from_env(env), run_kafka=kafka, run_smtp=smtp)
        self.state: StackState | None = None
        self.proxy: FaultProxy | None = None
        if proxied:
            listener = ProxiedListener(port=free_port(), advertised=f"127.0.0.1:{free_port()}")
            self.settings = replace(self.settings, proxied=listener)
            self.proxy = FaultProxy(f"127.0.0.1:{listener.port}",
                                    int(listener.advertised.rpartition(":")[2]))

    @property
    def worker_bootstrap(self) -> str:
        """Where workers connect: through the proxy if there is one, else the broker."""
        return self.proxy.address if self.proxy is not None else self.bootstrap

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    def up(self) -> PrivateStack:
        """Start the stack (blocking: run it in a thread from async code)."""
        if self.proxy is not None:
            self.proxy.start()
        try:
            self.state = up(self.settings)
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        down(self.settings.stack_dir)

    def __enter__(self) -> PrivateStack:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    @property
    def smtp(self) -> MailSink:
        return MailSink("127.0.0.1", self.settings.smtp_port, self.settings.maildir)

    def _index(self, name: str) -> int:
        assert self.state is not None, "the stack is not up"
        return next(i for i, s in enumerate(self.state.services) if s.name == name)

    def stop_service(self, name: str) -> None:
        """Stop ``kafka`` or ``smtp`` (SIGTERM: a controlled shutdown, as in a restart)."""
        assert self.state is not None
        stop(self.state.services[self._index(name)])

    def start_service(self, name: str) -> None:
        """Start ``kafka`` or ``smtp`` again on the same port and data; record its process."""
        assert self.state is not None
        index = self._index(name)
        if name == "kafka":
            service = broker_flavour(self.settings).restart_broker(self.settings)
        else:
            service = start_smtp(self.settings)
        services = list(self.state.services)
        services[index] = service
        self.state = replace(self.state, services=tuple(services))
        self.state.save()  # so `down` stops the new process
