"""An earlier release's code, to run a worker of it beside the current release (the
``rolling-upgrade`` scenario): its packages from git history, its dependencies from this venv.

The previous release is ``PREVIOUS_RELEASE``: the latest patch of the release whose stored
formats are the previous ones (cart format 1, the one golden fixtures v2 hold; plans and
contacts 2). That release is 9fa5f5f, on main just before the clicks branch brought cart format
3 (2f65457) in its merge; its patch (e3231d5, on the branch ``release-previous-patch``, merged
into main's history so that every clone has it) backports one consumer fix from main: no record
is handed on before the seek that ends its partition's rebalance (53003b4). Without it, a
worker of either release folded records fetched between Faust's resume and its seek ahead of
the records the seek read again (one cart's events out of offset order: 1 run in 6 of this
scenario lost a quantity change, and a CI run abandoned carts early on the partitions the
previous release kept). As with any rolling upgrade, one upgrades from the previous release's
latest patch. Not ``2f65457^`` (d99e1d8), though it writes the same formats: it lacks the
rebalance fixes 589d37e and dc4f85e too. A release that changes a stored format moves
``PREVIOUS_RELEASE`` to the latest patch of the release before it.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path

from cartwatch_dev.chaos.deployment import Deployment
from cartwatch_dev.chaos.report import ScenarioResult
from cartwatch_dev.chaos.scenarios import rolling_upgrade

PREVIOUS_RELEASE = "e3231d51ac4ddd358aabbb15e2a9fc7e0cdd4467"
PREVIOUS_CART_FORMAT = 1
"""The cart format ``PREVIOUS_RELEASE`` writes."""
RELEASE_PACKAGES = ("streams", "config", "schemas")
"""The packages a worker imports from its release's tree; dependencies come from the venv."""


def repository() -> Path:
    """The checkout this package runs from (``devtools/cartwatch_dev`` lies in it)."""
    return Path(__file__).resolve().parents[3]


class ReleaseUnavailable(Exception):
    """The release's commit cannot be read here (no git, or a clone without that history)."""


def release_tree(commit: str, dest: Path, repo: Path | None = None) -> Path:
    """The packages of ``commit`` (``RELEASE_PACKAGES``, by ``git archive``) unpacked in
    ``dest``: a real earlier release's code, to run beside the current one."""
    repo = repo or repository()
    git = shutil.which("git")
    if git is None:
        raise ReleaseUnavailable("git is not installed")
    found = subprocess.run([git, "-C", str(repo), "cat-file", "-e", f"{commit}^{{commit}}"],
                           capture_output=True, text=True)
    if found.returncode != 0:
        raise ReleaseUnavailable(
            f"commit {commit} is not in the clone at {repo} (a shallow clone? `git fetch "
            f"--unshallow` brings the history): {found.stderr.strip()}")
    archive = subprocess.run([git, "-C", str(repo), "archive", "--format=tar", commit,
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


async def upgrade_from_previous_release(deployment: Deployment) -> ScenarioResult:
    """The ``rolling-upgrade`` scenario: ``PREVIOUS_RELEASE`` and the current release sharing
    the partitions under load (``scenarios.rolling_upgrade``). Raises ``ReleaseUnavailable``
    where this checkout has no history of that commit."""
    tree = release_tree(PREVIOUS_RELEASE, deployment.workdir / "previous-release")
    return await rolling_upgrade(deployment, release_environment(tree, os.environ))
