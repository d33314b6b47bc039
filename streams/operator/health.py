"""Readiness: what ``/readyz`` answers, given the checks of this worker.

A worker is ready only when all checks pass; the body names every check either way, so the
orchestrator's event log says which one held a worker back.
"""


def readiness(checks: dict[str, bool]) -> tuple[int, dict[str, object]]:
    """HTTP status (200 or 503) and body of the readiness probe."""
    ready = all(checks.values())
    return (200 if ready else 503), {"ready": ready, "checks": checks}
