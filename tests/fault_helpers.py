"""What every fault test asserts of a scenario's result (``cartwatch_dev.chaos``)."""

from __future__ import annotations

from cartwatch_dev.chaos import ScenarioResult, render


def assert_exact(result: ScenarioResult) -> None:
    """Exactly the expected outputs: nothing lost, nothing invented, every abandoned cart with
    the lines, item count, total and times the load's ledger says."""
    expected = result.expected
    assert expected.abandonment_ids, "a scenario without abandonments proves nothing"
    assert result.abandoned == expected.abandonment_ids, render([result])
    assert result.recovered == expected.recovered_ids, render([result])
    assert result.reactivated == expected.reactivated_ids, render([result])
    assert result.verdict.ok, result.verdict.problems()
    assert result.problems() == [], render([result])
    # Every reminder the ledger makes due arrived, none that must not be sent, and not one
    # (abandonment, step) twice.
    assert result.emails_expected and result.emails == result.emails_expected, render([result])
    assert result.duplicate_emails == 0, render([result])
