"""Judge the reminders a scenario's SMTP server received: each due one once, none twice.

An abandonment that stays abandoned (never recovered or reactivated) and whose cart has an
email address must get exactly one reminder. One that was later recovered or reactivated may
or may not have got one before (it depends on when the worker decided), but never two. A
later abandonment of the same cart gets none (the per-address frequency cap).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from streams.chaos.deployment import OutputLog
from streams.chaos.report import ScenarioResult
from streams.stack import read_maildir


def judge_emails(result: ScenarioResult, log: OutputLog, maildir: Path) -> None:
    """Fill the email columns of ``result`` from the Maildir and the outputs."""
    emails = read_maildir(maildir)
    keys = Counter((m["X-Cartwatch-Abandonment"], m["X-Cartwatch-Step"]) for m in emails)
    ids = Counter(m["Message-ID"] for m in emails)
    with_address = {
        record.value["abandonment_id"]: record.value["sequence"]
        for record in log.of("abandoned")
        if (record.value["cart"].get("customer") or {}).get("email")
    }
    ended = result.recovered | result.reactivated
    must = {a for a, sequence in with_address.items()
            if sequence == 1 and a not in ended and a in result.expected.abandonment_ids}
    emailed = {abandonment for abandonment, _ in keys}
    result.emails_expected = len(must)
    result.emails = len(emailed & must)
    result.duplicate_emails = max(sum(keys.values()) - len(keys), sum(ids.values()) - len(ids))
    strays = emailed - set(with_address)
    if strays:
        result.failures.append(f"reminders for unknown abandonments: {sorted(strays)[:5]}")
    optional = len(emailed - must)
    result.notes.append(f"{len(emails)} reminders received: {len(emailed & must)} due ones, "
                        f"{optional} for abandonments later recovered/reactivated (optional)")
