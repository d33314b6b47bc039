"""The worker's event counters: one object the processors are given and ``/metrics`` reads.

Names are ``in:<topic>``, ``out:<type>``, ``dead_lettered``, ``log:<status>``, ... (see
``streams.operator.metrics.counter_families``). Both the lifecycle pipeline and the notifier
count into it, so a message the notifier dead-letters is in ``cartwatch_dead_lettered_total``
like one the pipeline refused.
"""

from collections import Counter

worker_counters: Counter[str] = Counter()
