"""A local development stack: a real Kafka broker and SMTP server on 127.0.0.1.

`cartwatch stack up | down | status` (see `cartwatch_dev.stack.cli`) and the test harness
(`tests/conftest.py`) both drive it through `up`, `down` and `status`.
"""

from cartwatch_dev.stack.lifecycle import StackState, down, status, up
from cartwatch_dev.stack.process import ServiceProcess, StackError
from cartwatch_dev.stack.smtp import clear_maildir, read_maildir

__all__ = [
    "ServiceProcess",
    "StackError",
    "StackState",
    "clear_maildir",
    "down",
    "read_maildir",
    "status",
    "up",
]
