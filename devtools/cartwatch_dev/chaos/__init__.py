"""Fault injection against real workers and a real broker (``cartwatch chaos`` and the tests).

- ``workers``: start, kill -9 and restart ``cartwatch worker`` processes, watch their rebalances.
- ``deployment``: a scenario's private topics, workers, live producer and output reader.
- ``stack``: a private local stack whose broker may be stopped and started.
- ``hostile``: bad input messages with the dead-letter kind each must get.
- ``scenarios``: kill -9, rebalance, broker restart, SMTP outage, hostile input; each returns
  a result.
- ``emails``: each due reminder received once, none twice (from the scenario's Maildir).
- ``report``: expected versus seen, and the table the command prints.
"""

from streams.chaos.deployment import Deployment, OutputLog
from streams.chaos.report import ScenarioResult, render
from streams.chaos.scenarios import (
    broker_restart,
    hostile_input,
    kill9,
    live_load,
    rebalance,
    smtp_outage,
)
from streams.chaos.stack import MailSink, PrivateStack
from streams.chaos.workers import WorkerError, WorkerProcess

__all__ = [
    "Deployment",
    "MailSink",
    "OutputLog",
    "PrivateStack",
    "ScenarioResult",
    "WorkerError",
    "WorkerProcess",
    "broker_restart",
    "hostile_input",
    "kill9",
    "live_load",
    "rebalance",
    "render",
    "smtp_outage",
]
