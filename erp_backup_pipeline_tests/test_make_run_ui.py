"""A fresh `make run` in a real browser: an installation that began four days ago and missed three dates backfills
them from the UI, sees each one Materialized with every check Passed under its date, the late capture labelled as
such and the restore command on the partition's page, and no date before the installation's first day; the sources
the demo does not have are marked and left out of "Materialize all".

scripts/run-local.sh runs as `make run` runs it (demo ERP, keys, config, today's backups, then `dagster dev` with
webserver and daemon), with ERP_BACKUP_VAR pointing at a directory of the test, so ./var is left alone; the config
that `erp-backup init` writes first is given a first day four days ago. The screenshots are written under the test's
tmp_path (the path is printed), for a reviewer to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import urllib.request
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from erp_backup_pipeline.core.sources import KINDS, enabled_sources
from erp_backup_pipeline.settings import load_settings
from erp_backup_pipeline_devkit.servers import free_port
from erp_backup_pipeline_tests import topology
from erp_backup_pipeline_tests.test_production import BROWSER_ARGS

ASSET = "sqlite_backup"
CHECKS = ("integrity", "size_anomaly", "restore_drill")  # each per partition; the UI's backfill runs all three
STARTUP_TIMEOUT = 180  # init, today's three backups through Dagster, then dagster dev loading the code location
BACKFILL_TIMEOUT = 150  # the daemon's backfill iteration every 30 s; one run at a time (the pool), seconds each
GREEN, GRAY = "div[style*='color-accent-green']", "div[style*='color-accent-gray']"  # materialized, missing
MODULE = "erp_backup_pipeline.orchestration.definitions"  # make run's `dagster dev -m`: the location's name
MAINTENANCE = ("backup_retention", "backup_catalog_audit", "recovery_drill")  # executable whatever is configured


def berlin_today() -> date:
    return datetime.now(ZoneInfo("Europe/Berlin")).date()


def location_loaded(topo: topology.Topology) -> bool:
    """`dagster dev -m MODULE` names its one location after the module: loaded, not a load error."""
    data = topo.graphql("""{ workspaceOrError { ... on Workspace { locationEntries { name
        locationOrLoadError { __typename } } } } }""")
    entries = data["workspaceOrError"]["locationEntries"]
    return bool(entries) and all((e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
                                 for e in entries)


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM to the process group of `make run` (its own session: the script's dagster dev and everything it
    started, nothing else), SIGKILL after ``timeout``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left (code servers, run workers)
    except ProcessLookupError:
        pass
    proc.wait()


def check_executions(topo: topology.Topology, check: str) -> list[dict[str, Any]]:
    data = topo.graphql("""query($key: AssetKeyInput!, $check: String!) {
        assetCheckExecutions(assetKey: $key, checkName: $check, limit: 50) { runId status partition } }""",
                        {"key": {"path": [ASSET]}, "check": check})
    return list(data["assetCheckExecutions"])


def passed_partitions(topo: topology.Topology) -> dict[str, set[str]]:
    """Per check, the dates Dagster counts as Passed: what the check's Partitions view shows (the same query)."""
    data = topo.graphql("""query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
        assetChecksOrError { ... on AssetChecks { checks { name partitionStatuses {
            ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } } } } } } } } }""",
                        {"key": {"path": [ASSET]}})
    found: dict[str, set[str]] = {}
    for item in data["assetNodeOrError"]["assetChecksOrError"]["checks"]:
        days: set[str] = set()
        for r in (item["partitionStatuses"] or {}).get("ranges", []):
            if r["status"] == "SUCCEEDED":
                day, end = date.fromisoformat(r["startKey"]), date.fromisoformat(r["endKey"])
                while day <= end:
                    days.add(day.isoformat())
                    day += timedelta(days=1)
        found[item["name"]] = days
    return found


def test_a_fresh_make_run_backfills_missed_dates_from_the_ui_each_with_its_checks_passed(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: scripts/system-deps.sh installs it"
    bin_dir = topology.ROOT / ".venv" / "bin"
    assert (bin_dir / "erp-backup").exists(), f"make run runs from {bin_dir}: make install first"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"screenshots: {shots}")

    today = berlin_today()
    first = today - timedelta(days=4)  # the installation's first day; today's backup is make run's own
    missed = [str(today - timedelta(days=d)) for d in (3, 2, 1)]  # the three most recent missed dates
    before = str(first - timedelta(days=1))

    # an installation that began four days ago: init first, then its first day in the config make run keeps
    var = tmp_path / "var"
    port = free_port()
    env = topology.base_env(ERP_BACKUP_VAR=str(var), PORT=str(port))
    subprocess.run([str(bin_dir / "erp-backup"), "init", "--var", str(var)], env=env, cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    config = var / "erp-backup.yaml"
    text, n = re.subn(r"^(\s+start: )\S+", rf"\g<1>{first.isoformat()}", config.read_text(), count=1, flags=re.M)
    assert n == 1, text
    config.write_text(text)
    assert yaml.safe_load(text)["partitions"]["start"] == first

    topo = topology.Topology(tmp_path, var / "dagster_home", env, 0, port)
    topo.start("make-run", [str(topology.ROOT / "scripts" / "run-local.sh")])
    try:
        topo.wait("the UI of make run (/server_info)",
                  lambda: urllib.request.urlopen(f"{topo.url}/server_info", timeout=2).status == 200, STARTUP_TIMEOUT)
        topo.wait("the code location loaded", lambda: location_loaded(topo), 60)
        expect.set_options(timeout=60_000)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=BROWSER_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 2400})
                page.set_default_timeout(60_000)
                partitions_url = f"{topo.url}/assets/{ASSET}?view=partitions"

                def row(day: str) -> Any:
                    page.get_by_placeholder("Filter by name…").fill(day)
                    return page.locator(f'[title="{day}"]').locator("xpath=../..")

                # the backups the demo makes stand apart from the ones it does not: those are marked and not
                # executable, and "Materialize all" launches only what is configured (and the maintenance assets)
                enabled = enabled_sources(load_settings(config))
                page.goto(f"{topo.url}/locations/{MODULE}/asset-groups/erp_backups")
                expect(page.get_by_text(f"Materialize all ({len(enabled) + len(MAINTENANCE)})")).to_be_visible()
                page.screenshot(path=shots / "00-group-materialize-all-only-configured.png")
                absent = sorted(set(KINDS) - set(enabled))
                assert absent, "the demo configures every source: nothing left to show unconfigured"
                page.goto(f"{topo.url}/assets/{absent[0]}")
                expect(page.get_by_text("External Asset", exact=True)).to_be_visible()
                expect(page.get_by_text(re.compile(r"^NOT CONFIGURED in this installation"))).to_be_visible()
                expect(page.get_by_role("button", name=re.compile(r"\bMaterialize$"))).to_be_disabled()
                page.screenshot(path=shots / "00-unconfigured-source-marked.png")

                # the dates begin at the first day: today materialized by make run, the four before it missing,
                # and nothing before the first day (neither listed nor counted as missing)
                page.goto(partitions_url)
                expect(page.get_by_text("Materialized (1)", exact=True)).to_be_visible()
                expect(page.get_by_text("Missing (4)", exact=True)).to_be_visible()
                expect(page.get_by_text("Failed (0)", exact=True)).to_be_visible()
                listed = {t for t in page.eval_on_selector_all("[title]", "els => els.map(e => e.title)")
                          if re.fullmatch(r"\d{4}-\d{2}-\d{2}", t)}
                assert listed == {str(first + timedelta(days=d)) for d in range(5)}, listed
                page.screenshot(path=shots / "01-partitions-from-the-first-day.png")
                expect(row(str(today)).locator(GREEN)).to_have_count(1)
                for day in [str(first), *missed]:
                    expect(row(day).locator(GRAY)).to_have_count(1)
                page.get_by_placeholder("Filter by name…").fill(before)
                expect(page.locator(f'[title="{before}"]')).to_have_count(0)
                page.screenshot(path=shots / "02-no-date-before-the-first-day.png")
                page.get_by_placeholder("Filter by name…").fill("")

                # the operator backfills the three most recent missed dates through Materialize…
                backfill = topology.backfill_from_the_ui(page, ASSET, missed[0], missed[-1], 3,
                                                         shots / "03-backfill-dialog.png")

                # make run's daemon runs them: one run per date, tagged with it, all succeeded
                runs = topology.wait_for_backfill_runs(topo, backfill, 3, BACKFILL_TIMEOUT)
                assert [r["status"] for r in runs] == ["SUCCESS"] * 3, runs
                by_run = {r["runId"]: r["tags"]["dagster/partition"] for r in runs}
                assert sorted(by_run.values()) == missed
                page.goto(f"{topo.url}/runs/b/{backfill}?tab=runs")
                expect(page.get_by_text("Success", exact=True)).to_have_count(3)
                page.screenshot(path=shots / "04-backfill-runs.png")

                # the partitions view: the three dates Materialized, only the first day still missing
                page.goto(partitions_url)
                expect(page.get_by_text("Materialized (4)", exact=True)).to_be_visible()
                expect(page.get_by_text("Missing (1)", exact=True)).to_be_visible()
                for day in missed:
                    expect(row(day).locator(GREEN)).to_have_count(1)
                expect(row(str(first)).locator(GRAY)).to_have_count(1)
                page.get_by_placeholder("Filter by name…").fill("")
                page.screenshot(path=shots / "05-partitions-after-the-backfill.png")

                # every check of every backfilled date passed, recorded under that date (each run's own), and
                # Dagster counts it Passed for that date: what the check's Partitions view shows
                for check in CHECKS:
                    executions = [e for e in check_executions(topo, check) if e["runId"] in by_run]
                    assert sorted((e["partition"], e["status"]) for e in executions) == \
                        [(d, "SUCCEEDED") for d in missed], (check, executions)
                    assert all(e["partition"] == by_run[e["runId"]] for e in executions), (check, executions)
                passed = passed_partitions(topo)
                for check in CHECKS:
                    assert passed[check] == {*missed, str(today)}, (check, passed)
                for check in CHECKS:
                    page.goto(f"{topo.url}/assets/{ASSET}?view=checks&checkDetail={check}")
                    expect(page.get_by_text("Latest execution")).to_be_visible()
                    page.get_by_role("tab", name="Partitions").last.click()
                    expect(page.get_by_text("Passed (4)", exact=True)).to_be_visible()
                    for status in ("Failed", "Execution Failed", "Skipped", "In Progress"):
                        expect(page.get_by_text(f"{status} (0)", exact=True)).to_be_visible()
                    expect(page.get_by_text("Missing (1)", exact=True)).to_be_visible()  # the first day
                    page.screenshot(path=shots / f"06-check-{check}-per-partition.png")

                # a backfilled date's page: labelled a late capture (metadata and tag), with its restore command
                day = missed[0]
                page.goto(f"{partitions_url}&partition={day}")
                expect(page.get_by_text("Latest materialization")).to_be_visible()
                note = f"late capture: captured on {today}, holds the data of {today}, not of {day}"
                expect(page.locator("tr", has=page.get_by_text("late_capture", exact=True))).to_contain_text(note)
                expect(page.locator("tr", has=page.get_by_text("restore", exact=True))).to_contain_text(
                    f"erp-backup restore sqlite --partition {day} --to TARGET --dry-run")
                page.get_by_text(re.compile(r"^Show tags \(\d+\)")).click()
                expect(page.locator("tr", has=page.get_by_text("erp_backup/late_capture", exact=True))).to_contain_text(
                    f"data-of-{today}")
                page.screenshot(path=shots / "07-late-capture-and-restore-command.png", full_page=True)

                # today's, captured on its own day, is no late capture
                page.goto(f"{partitions_url}&partition={today}")
                expect(page.locator("tr", has=page.get_by_text("restore", exact=True))).to_contain_text(
                    f"erp-backup restore sqlite --partition {today} --to TARGET --dry-run")
                expect(page.get_by_text("late_capture", exact=True)).to_have_count(0)
                page.screenshot(path=shots / "08-today-not-late.png", full_page=True)
            finally:
                browser.close()
    finally:
        stop_group(topo.procs.pop("make-run"))
        print(f"make run's output: {topo.log('make-run')}")
