"""What every fault test asserts of a scenario's result (``cartwatch_dev.chaos``), and how a
test runs a worker of an earlier release (its source from git history, the current venv)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path

from cartwatch_dev.chaos import ScenarioResult, render

REPO = Path(__file__).resolve().parent.parent
RELEASE_PACKAGES = ("streams", "config", "schemas")
"""The packages a worker imports from its release's tree; dependencies come from the venv."""


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


class ReleaseUnavailable(Exception):
    """The release's commit cannot be read here (no git, or a clone without that history)."""


def release_tree(commit: str, dest: Path) -> Path:
    """The packages of ``commit`` (``RELEASE_PACKAGES``, by ``git archive``) unpacked in
    ``dest``: a real earlier release's code, to run beside the current one."""
    git = shutil.which("git")
    if git is None:
        raise ReleaseUnavailable("git is not installed")
    found = subprocess.run([git, "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"],
                           capture_output=True, text=True)
    if found.returncode != 0:
        raise ReleaseUnavailable(
            f"commit {commit} is not in the clone at {REPO} (a shallow clone? `git fetch "
            f"--unshallow` brings the history): {found.stderr.strip()}")
    archive = subprocess.run([git, "-C", str(REPO), "archive", "--format=tar", commit,
                              *RELEASE_PACKAGES], capture_output=True, check=True)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def release_environment(tree: Path, env: Mapping[str, str]) -> dict[str, str]:
    """What to add to a worker's environment ``env`` so that it runs the release in ``tree``:
    ``tree`` first on ``PYTHONPATH``, ahead of the venv's editable install of the current
    release (whose import hook only answers for what ``sys.path`` does not find).

    Checked by importing the packages in a child process with that environment: a worker that
    silently ran the current code would make a rolling-upgrade test prove nothing."""
    path = os.pathsep.join(p for p in (str(tree), env.get("PYTHONPATH", "")) if p)
    added = {"PYTHONPATH": path}
    probe = "import sys, " + ", ".join(RELEASE_PACKAGES) + "; print(" + ", ".join(
        f"{name}.__file__" for name in RELEASE_PACKAGES) + ", sep='\\n')"
    found = subprocess.run([sys.executable, "-c", probe], env={**env, **added}, cwd=tree.parent,
                           capture_output=True, text=True, check=True).stdout.split()
    outside = [file for file in found if not Path(file).is_relative_to(tree)]
    assert not outside, f"modules not taken from the release tree {tree}: {outside}"
    return added
