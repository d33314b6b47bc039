"""The stack's mail server: a real SMTP server (aiosmtpd) that keeps every message in a Maildir.

It runs as its own process (`python -m cartwatch_dev.stack.smtp --port N --maildir DIR`) so the
stack can start and stop it like Kafka, and so a test reads exactly what a client delivered.
aiosmtpd's `Mailbox` handler adds `X-Peer`, `X-MailFrom` and `X-RcptTo` headers with the
SMTP envelope.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import mailbox
import signal
import sys
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP

from cartwatch_dev.stack.process import ServiceProcess, accepts_connections, spawn, wait_ready
from cartwatch_dev.stack.settings import LOCALHOST, StackSettings


def start_smtp(settings: StackSettings) -> ServiceProcess:
    """Start the mail server for `settings` and wait until it accepts connections."""
    service = spawn(
        "smtp",
        [
            sys.executable,
            "-m",
            "cartwatch_dev.stack.smtp",
            "--port",
            str(settings.smtp_port),
            "--maildir",
            str(settings.maildir),
        ],
        log=settings.stack_dir / "smtp.log",
        address=f"{LOCALHOST}:{settings.smtp_port}",
        cwd=Path(__file__).resolve().parents[2],  # makes `streams` importable when not installed
    )
    wait_ready(
        service,
        lambda: accepts_connections(LOCALHOST, settings.smtp_port),
        settings.start_timeout,
        "CARTWATCH_STACK_TIMEOUT",
    )
    return service


def read_maildir(maildir: Path) -> list[EmailMessage]:
    """All messages in `maildir`, oldest delivery first, parsed with the modern email API."""
    if not maildir.is_dir():
        return []
    box = mailbox.Maildir(maildir, factory=None, create=False)
    keys = sorted(box.keys(), key=lambda key: (box.get_message(key).get_date(), key))
    return [
        email.message_from_bytes(box.get_bytes(key), policy=default_policy)
        for key in keys
    ]


def clear_maildir(maildir: Path) -> None:
    """Delete every message in `maildir` (e.g. between tests)."""
    if maildir.is_dir():
        mailbox.Maildir(maildir, factory=None, create=False).clear()


async def serve(port: int, maildir: Path) -> None:
    """Serve SMTP on 127.0.0.1:`port` until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    handler = Mailbox(maildir)
    # A fixed hostname: the default, socket.getfqdn(), can stall on machines without DNS.
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="localhost"), host=LOCALHOST, port=port
    )
    print(f"SMTP server on {LOCALHOST}:{port}, storing mail in {maildir}", flush=True)
    async with server:
        await stopped.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.maildir))


if __name__ == "__main__":
    main()
