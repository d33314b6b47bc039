"""`cartwatch bench --quick` runs end to end and reports every figure (not timed)."""

import json
import math
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

READ_MODEL = ("feed", "keep", "list", "list.deep", "list.after", "keyset.deep", "search.product",
              "search.customer", "cart", "insights", "export")
FIGURES = {"a", "b", "b0", "c", "d0", "d", "d2", "e.p50", "e.p99", "e.max", "f", "g", "h", "i",
           "j", "k", "k99"} | {f"r.{name}.{backend}" for name in READ_MODEL
                               for backend in ("sqlite", "pg")}


def test_quick_bench_reports_every_figure_well_formed(kafka_bootstrap, tmp_path):
    output = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARTWATCH_")}
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "bench", "--quick",
         "--broker", f"kafka://{kafka_bootstrap}", "--output", str(output),
         "--state-dir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    figures = {figure["key"]: figure for figure in report["figures"]}
    assert set(figures) == FIGURES
    for key, figure in figures.items():
        assert isinstance(figure["value"], float) and math.isfinite(figure["value"]), key
        assert figure["value"] > 0, key
    assert set(report["ratios"]) == {"d/a", "d/b", "d/c", "3b/b0", "d/b0", "d0/b0"}
    assert all(ratio > 0 for ratio in report["ratios"].values())
    for worker in ("d0", "d", "d2"):  # per event; in batches, without and with the read model
        # judged against the load's ledger: ids, and each abandoned cart's lines and totals
        outputs = report["checks"][f"{worker}_outputs"]
        none = {"abandoned": 0, "recovered": 0, "reactivated": 0}
        assert outputs["missing"] == outputs["unexpected"] == outputs["different"] == none, (
            worker, outputs["problems"])
        assert outputs["expected"]["abandonment_ids"] > 0, worker
    assert figures["i"]["unit"] == "emails/s" and figures["i"]["floor"] == ">= 500 emails/s"
    emails = report["checks"]["i_emails"]
    assert emails["expected"] == emails["received"] > 0
    assert emails["exactly_once"], emails  # every reminder arrived once, to its customer only
    steps = report["checks"]["j_steps"]  # the live rate: rising steps, the first kept up with
    assert steps and steps[0]["sustained"] and steps[0]["published_per_s"] > 0, steps
    assert [step["target"] for step in steps] == sorted(step["target"] for step in steps)
    api = report["checks"]["k_api"]  # the operator API under load while events flow
    assert api["answered"] > 0 and api["failed"] == 0, api["failure_examples"]
    assert set(api["endpoints"]) == {"carts", "cart", "carts.csv", "insights", "log", "metrics",
                                     "readyz"}, api["endpoints"]  # cart: an abandoned one
    assert api["events"]["published_per_s"] > 0
    assert report["machine"]["cores"] >= 1 and report["started_at"]
    assert "| d |" in done.stdout and "d/c" in done.stdout
