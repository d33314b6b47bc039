"""The worker, assembled: every processor registered on the Faust app, in one place.

Importing this module registers the lifecycle pipeline (agent, cart table, timers), the reminder
notifier (its agents, when enabled) and the operator surface (API, read model, metrics), and
connects the seams between them: the operator API's "remind now" goes to the notifier's
scheduler, and ``/metrics`` reads the processors' counters, input positions and tables through
the one ``WorkerMetrics`` it is given here. The processors never import each other; a new
agent is registered here.
"""

from typing import Any

from streams import pipeline
from streams.app import app, carts_table, rocksdb_memory
from streams.notifier import worker as notifier
from streams.operator import notifications as operator_gateway
from streams.operator import web
from streams.operator.metrics import WorkerMetrics

__all__ = ["app"]

MANUAL_REMINDER_NOTE = ("the next step is decided now with the usual consent, quiet hours and "
                        "cap; see the notification log for the outcome")


async def remind_now(abandonment_id: str, cart_id: str, store_id: str) -> Any:
    """The operator API's manual reminder, handed to the scheduler that owns the cart."""
    await notifier.request_manual_reminder(abandonment_id, cart_id, store_id)
    return operator_gateway.GatewayResult(202, {
        "requested": True, "abandonment_id": abandonment_id, "note": MANUAL_REMINDER_NOTE,
    })


if notifier.notifier.enabled:
    operator_gateway.install_remind(remind_now)


metrics = WorkerMetrics(
    counters=pipeline.counters,
    positions=pipeline.timers,
    carts=carts_table,
    # the assignor is created when the app starts, not at import
    assigned=lambda: app.assignor.assigned_actives(),
    highwater=pipeline.timers.highwater,
    rocksdb_memory=lambda: rocksdb_memory(app.tables.values()),
)
pipeline.abandon_observers.append(metrics.observe_abandonment)
web.serve_metrics(metrics)
