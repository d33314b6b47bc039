"""Fault injection against real workers and a real broker (``cartwatch chaos`` and the tests).

- ``workers``: start, kill -9 and restart ``cartwatch worker`` processes, watch their rebalances.
- ``deployment``: a scenario's private topics, workers, live producer and output reader.
- ``stack``: a private local stack whose broker may be stopped and started.
- ``hostile``: bad input messages with the dead-letter kind each must get.
- ``proxy``: a TCP proxy between workers and broker that resets, blackholes, delays and stalls.
- ``network``: the network fault scenarios, on a stack whose workers connect through the proxy.
- ``scenarios``: kill -9, rebalance, broker restart, SMTP outage, hostile input, soak, rolling
  upgrade; each
  returns a result.
- ``soak``: the soak's samples (RSS, descriptors, lags), its pure verdict, CSV and plot.
- ``emails``: each due reminder received once, none twice (from the scenario's Maildir).
- ``report``: expected versus seen, and the table the command prints.
"""

from cartwatch_dev.chaos.deployment import Deployment, OutputLog
from cartwatch_dev.chaos.network import net_blackhole, net_latency, net_loss, net_reset
from cartwatch_dev.chaos.proxy import FaultProxy
from cartwatch_dev.chaos.report import ScenarioResult, render
from cartwatch_dev.chaos.scenarios import (
    broker_restart,
    hostile_input,
    kill9,
    live_load,
    rebalance,
    rolling_upgrade,
    smtp_outage,
    soak,
)
from cartwatch_dev.chaos.stack import MailSink, PrivateStack
from cartwatch_dev.chaos.workers import WorkerError, WorkerProcess

__all__ = [
    "Deployment",
    "FaultProxy",
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
    "net_blackhole",
    "net_latency",
    "net_loss",
    "net_reset",
    "rebalance",
    "render",
    "rolling_upgrade",
    "smtp_outage",
    "soak",
]
