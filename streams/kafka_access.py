"""What each role of cartwatch does on the cluster: topics read, written, created; groups.

The single description of cartwatch's use of Kafka, for ``cartwatch acls`` (the minimal ACLs)
and for the start-up check of partition counts. It mirrors what the code does:

- **pipeline**: the Faust worker's agents (``streams/pipeline.py``) in the consumer group
  ``app_id``; it reads the inputs, its timer ticks, the notifier's feedback and the clicks,
  writes the outputs (and the clicks, from the worker's ``/cartwatch/r/`` endpoint), and keeps
  the cart table in the changelog ``<app_id>-carts-changelog``. Faust's
  partition assignor also subscribes to ``<app_id>-__assignor-__leader``.
- **notifier** (``notifier.enabled``): more agents of the same Faust app and group, with three
  tables of their own; the unsubscribe endpoint of the worker's web server writes
  ``unsubscribes``.
- **read model** (``operator.read_model`` not ``off``): a plain consumer *without* a group that
  reads every partition of the outputs (and ``cart_events``), so it needs no group ACL.

Kafka's READ and WRITE imply DESCRIBE. Every topic the Faust app declares is created by the
worker if it is missing, which needs CREATE on that topic (or on the cluster); topics created
beforehand need no CREATE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from config.settings import Settings
from streams.operator.feed import feed_topics

Operation = Literal["Read", "Write", "Create", "Describe"]
OPERATIONS: tuple[Operation, ...] = ("Read", "Write", "Create", "Describe")
"""The order operations are listed in."""
ROLES = ("pipeline", "notifier", "read model")

PIPELINE_TABLES = ("carts",)
NOTIFIER_TABLES = ("reminder_plans", "notifier_contacts", "notifier_deliveries")


@dataclass(frozen=True)
class Grant:
    """One ACL: ``operations`` on a ``resource`` ("topic" or "group") for a ``role``."""

    role: str
    resource: Literal["topic", "group"]
    name: str
    operations: tuple[Operation, ...]
    why: str


def changelog(settings: Settings, table: str) -> str:
    """Faust's changelog topic of ``table``: ``<app_id>-<table>-changelog``."""
    return f"{settings.app_id}-{table}-changelog"


def leader_topic(settings: Settings) -> str:
    """Faust's partition assignor's topic (one partition, created by the worker)."""
    return f"{settings.app_id}-__assignor-__leader"


def _topic(settings: Settings, role: str, name: str, operations: tuple[Operation, ...],
           why: str, created: bool) -> Grant:
    return Grant(role, "topic", settings.topic(name),
                 (*operations, "Create") if created else operations, why)


def grants(settings: Settings, *, create_topics: bool = True) -> list[Grant]:
    """The minimal ACLs of every role the configuration runs.

    ``create_topics``: the worker creates the topics it needs (CREATE on each); False when
    they are all created beforehand (see ``partition_problems`` for the counts they need).
    """
    c = create_topics
    rw: tuple[Operation, ...] = ("Read", "Write")
    out: list[Grant] = [
        _topic(settings, "pipeline", "cart_events", ("Read",), "input", c),
        _topic(settings, "pipeline", "purchase_events", ("Read",), "input", c),
        _topic(settings, "pipeline", "timer_ticks", rw, "the worker's own deadline ticks", c),
        _topic(settings, "pipeline", "reminders_sent", ("Read",),
               "notifier feedback (reminder_sent)", c),
        _topic(settings, "pipeline", "clicks", ("Read", "Write"),
               "reminder link clicks: written by /cartwatch/r/, read for attribution", c),
        *(_topic(settings, "pipeline", name, ("Write",), "output", c)
          for name in ("abandoned", "reactivated", "recovered", "dead_letter")),
        *(Grant("pipeline", "topic", changelog(settings, table), (*rw, *(("Create",) if c else ())),
                f"changelog of the table {table}") for table in PIPELINE_TABLES),
        Grant("pipeline", "topic", leader_topic(settings), ("Read", *(("Create",) if c else ())),
              "Faust's partition assignor"),
        Grant("pipeline", "group", settings.app_id, ("Read",),
              "the workers' consumer group (commits, rebalances)"),
    ]
    if settings.notifier.enabled:
        out += [
            *(_topic(settings, "notifier", name, ("Read",), "cartwatch outputs", c)
              for name in ("abandoned", "recovered", "reactivated")),
            *(_topic(settings, "notifier", name, rw, why, c) for name, why in (
                ("reminder_ticks", "the notifier's own deadline ticks"),
                ("reminders_due", "reminders re-keyed by address"),
                ("unsubscribes", "read; written by the unsubscribe endpoint"),
            )),
            *(_topic(settings, "notifier", name, ("Write",), why, c) for name, why in (
                ("reminders_sent", "feedback to the pipeline"),
                ("notification_log", "every reminder attempt"),
                ("operator_notifications", "notifications for store operators"),
                ("dead_letter", "undecodable notifier input"),
            )),
            *(Grant("notifier", "topic", changelog(settings, table),
                    (*rw, *(("Create",) if c else ())), f"changelog of the table {table}")
              for table in NOTIFIER_TABLES),
            Grant("notifier", "group", settings.app_id, ("Read",),
                  "the same consumer group as the pipeline"),
        ]
    if settings.operator.read_model != "off":
        out += [_topic(settings, "read model", name, ("Read",),
                       "read model feed (all partitions, no group)", False)
                for name in feed_topics(settings).values()]
    return out


def copartitioned_topics(settings: Settings) -> list[str]:
    """The topics this configuration uses, which must all have ``settings.partitions``
    partitions.

    The pipeline's inputs, its ticks and its table's changelog are read as one source keyed by
    cart (partition n of each holds the same carts), outputs are written to the partition of
    the input, and the notifier's topics and tables follow the same rule; Faust's assignor
    topic (one partition) is the exception.
    """
    leader = leader_topic(settings)
    names = {g.name: None for g in grants(settings) if g.resource == "topic" and g.name != leader}
    return list(names)


def created_topics(settings: Settings) -> set[str]:
    """The topics the worker creates when they are missing (the others it waits for)."""
    return {g.name for g in grants(settings) if g.resource == "topic" and "Create" in g.operations}
