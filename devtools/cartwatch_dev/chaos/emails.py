"""Judge the reminders a scenario's SMTP server received against the ledger's expectations.

Which (abandonment, step) emails are due comes from the load generator's ledger
(``expected_reminders``): every step of an abandonment whose shopper left an address and did
not come back or buy before it fell due, except what the per-address frequency cap holds back
(a cart's later abandonment, after a reminder for an earlier one). Only a follow-up close to
the moment a step is decided (``MARGIN``, or an outage the scenario records in
``ScenarioResult.blackouts``) makes an email optional. Each due one must arrive exactly once;
any other is a failure.

One exception is the notifier's at-most-once rule: a worker killed between claiming a step and
recording its send leaves the step's outcome unknown, and its successor logs it skipped
(``outcome_unknown``) rather than risk a second email. Such a step may be missing, but only
after a crash (a blackout began before it was logged); without one it is a failure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from cartwatch_dev.chaos.report import ScenarioResult
from cartwatch_dev.loadgen.ledger import ReminderRule, expected_reminders
from cartwatch_dev.stack import read_maildir

MARGIN = 0.5
"""Seconds around a step's decision within which a purchase or new activity may or may not
beat it: timer resolution, the notifier's tick and the output topics' round trip."""


def judge_emails(result: ScenarioResult, rule: ReminderRule, maildir: Path,
                 unknown_outcomes: Mapping[tuple[str, int], float] | None = None) -> None:
    """Fill the email columns of ``result`` from the Maildir and the ledger.

    ``unknown_outcomes``: (abandonment, step) -> when the notifier logged it skipped with
    ``outcome_unknown``.
    """
    emails = read_maildir(maildir)
    keys = Counter((m["X-Cartwatch-Abandonment"], int(m["X-Cartwatch-Step"])) for m in emails)
    ids = Counter(m["Message-ID"] for m in emails)
    reminders = expected_reminders(result.expected, rule, margin=MARGIN,
                                   blackouts=result.blackouts)
    received = set(keys)
    unknown = unknown_outcomes or {}
    first_crash = min((start for start, _ in result.blackouts), default=None)
    at_most_once = {key for key, logged_at in unknown.items()
                    if first_crash is not None and first_crash <= logged_at}
    unexplained = sorted(set(unknown) - at_most_once)
    if unexplained:
        result.failures.append(f"{len(unexplained)} steps logged outcome_unknown without a "
                               f"crash before: {unexplained[:5]}")
    lost_by_design = (reminders.must & at_most_once) - received
    must = reminders.must - lost_by_design
    result.emails_expected = len(must)
    result.emails = len(received & must)
    result.duplicate_emails = max(sum(keys.values()) - len(keys), sum(ids.values()) - len(ids))
    result.missing_emails = sorted(must - received)
    strays = received - reminders.must - reminders.optional
    if strays:
        result.failures.append(f"{len(strays)} reminders that must not be sent: "
                               f"{sorted(strays)[:5]}")
    result.notes.append(
        f"{len(emails)} reminders received: {len(received & reminders.must)} of "
        f"{len(reminders.must)} due, {len(received & reminders.optional)} of "
        f"{len(reminders.optional)} timing-dependent (optional), {len(strays)} not due, "
        f"{len(lost_by_design)} lost at most once (outcome unknown after a crash)")
