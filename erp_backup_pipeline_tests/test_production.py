"""The production topology on one machine, end to end, and the operator's UI in a real browser.

One stack for the module (deploy/production/dagster.yaml and workspace.yaml, unchanged): Dagster's storage
in a real PostgreSQL database, ``dagster api grpc``, ``dagster-webserver`` and ``dagster-daemon``; the
backups go to a real S3 endpoint (moto's server) from a demo SQLite ERP. Screenshots of the browser test
are saved under its tmp_path (the path is printed).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from erp_backup_pipeline.settings import Settings, load_settings
from erp_backup_pipeline_devkit.servers import MotoServer, PostgresServer, free_port, stop_process
from erp_backup_pipeline_tests import topology
from erp_backup_pipeline_tests.conftest import StrictS3, catalog_entries

ASSET = "sqlite_backup"
# every backup asset and the ERP source upstream of it
UPSTREAM = {"sqlite_backup": "erp_sqlite_database", "postgres_dump": "erp_postgres_database",
            "postgres_full": "erp_postgres_database", "postgres_incremental": "erp_postgres_database",
            "redis_snapshot": "erp_redis", "config_archive": "erp_config_files", "uploads_snapshot": "erp_uploads"}
BACKFILL_TIMEOUT = 150  # the backfill daemon ticks every 30 s; runs take a few seconds each


@dataclass
class Production:
    topo: topology.Topology
    database: topology.DagsterDatabase
    config: Path
    settings: Settings

    def backed_up(self, partitions: list[str]) -> dict[str, Any]:
        """The catalog's verified, complete entries of ``partitions`` on the S3 destination."""
        entries = catalog_entries(self.settings, ASSET)
        return {e.manifest.partition: e for e in entries
                if e.manifest.partition in partitions and e.manifest.verify.get("ok") and e.manifest.complete}


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory, pg_server: PostgresServer, moto_server: MotoServer,
               age_identity: tuple[Path, str]) -> Iterator[Production]:
    base = tmp_path_factory.mktemp("production")
    with topology.demo_stack(base, pg_server, moto_server, age_identity, "erp-production-e2e") as (topo, database, config):
        yield Production(topo, database, config, load_settings(str(config)))


def days_ago(*days: int) -> list[str]:
    today = date.today()
    return [str(today - timedelta(days=d)) for d in days]


def test_a_backfill_launched_through_graphql_is_run_by_the_daemon_into_s3_with_history_in_postgres(
        production: Production) -> None:
    topo, database = production.topo, production.database
    missed = days_ago(5, 4, 3)
    assert production.backed_up(missed) == {}
    # launched as the UI launches it: the runs of Dagster's implicit asset job carry none of our tags
    backfill = topology.launch_asset_backfill(topo, ASSET, missed)
    topo.start_daemon()
    runs = topology.wait_for_backfill_runs(topo, backfill, 3, BACKFILL_TIMEOUT)
    assert [r["status"] for r in runs] == ["SUCCESS"] * 3, runs
    assert sorted(r["tags"]["dagster/partition"] for r in runs) == missed  # one run per date, tagged with it
    assert not [r for r in runs if "erp_backup/source" in r["tags"]], runs

    # every check of every backfilled date is recorded under that date and passed: what the asset's check list,
    # its graph node and the check's partition view show (GraphQL, as the UI asks); nothing skipped, nothing
    # recorded under no partition
    by_run = {r["runId"]: r["tags"]["dagster/partition"] for r in runs}
    for check in ("integrity", "size_anomaly", "restore_drill"):
        data = topo.graphql("""query($key: AssetKeyInput!, $check: String!) {
            assetCheckExecutions(assetKey: $key, checkName: $check, limit: 50) { runId status partition } }""",
                            {"key": {"path": [ASSET]}, "check": check})
        executions = [e for e in data["assetCheckExecutions"] if e["runId"] in by_run]
        assert sorted((e["partition"], e["status"]) for e in executions) == [(d, "SUCCEEDED") for d in missed], \
            (check, executions)
        assert all(e["partition"] == by_run[e["runId"]] for e in executions), (check, executions)

    # two backups of the same source never ran at once: every op of sqlite_backup is in the pool
    # erp_backup/sqlite_backup, limited to 1 in the instance (topology.initialize_pools, the deployment step), and
    # the shipped dagster.yaml enforces pools per run: the daemon held the others back, naming the pool
    spans = sorted((r["startTime"], r["endTime"]) for r in runs)
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:], strict=False)), spans
    pools = database.query('SELECT concurrency_key, "limit" FROM concurrency_limits')
    assert (f"erp_backup/{ASSET}", 1) in pools, pools
    daemon_log = topo.log("daemon").read_text(errors="replace")
    assert f'is blocked by global concurrency limits: {{"erp_backup/{ASSET}": {{"granularity": "run"' in daemon_log

    # all three partitions are backed up (verified, manifest written) on the S3 endpoint
    found = production.backed_up(missed)
    assert sorted(found) == missed
    bucket = production.settings.destinations[0].bucket  # type: ignore[union-attr]
    for entry in found.values():
        assert entry.held_by == ["offsite"]
        assert entry.manifest.artifact_key.endswith(".age")

    # run history and the event log are in PostgreSQL, none of it in DAGSTER_HOME
    rows = database.query("SELECT run_id, status FROM runs WHERE backfill_id = %s", (backfill,))
    assert sorted(rows) == sorted((r["runId"], "SUCCESS") for r in runs)
    tagged = database.query("SELECT value FROM run_tags WHERE key = 'dagster/partition' "
                            "AND run_id = ANY(%s)", ([r["runId"] for r in runs],))
    assert sorted(v for (v,) in tagged) == missed
    materialized = database.query("SELECT DISTINCT partition FROM event_logs WHERE dagster_event_type = "
                                  "'ASSET_MATERIALIZATION' AND asset_key = %s", ('["sqlite_backup"]',))
    assert set(missed) <= {p for (p,) in materialized}
    assert not list(topo.home.rglob("*.db")), "Dagster wrote SQLite storage into DAGSTER_HOME"
    uris = database.query("SELECT event FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                          "AND partition = %s", (missed[0],))
    assert any(f"s3://{bucket}/" in event for (event,) in uris)


def test_missing_storage_setting_and_unreachable_code_server_are_named_in_one_line(
        production: Production, tmp_path: Path) -> None:
    workspace = str(topology.PRODUCTION / "workspace.yaml")
    # no DAGSTER_PG_HOST: the daemon and the webserver refuse to start and name the variable
    env = {k: v for k, v in production.topo.env.items() if k != "DAGSTER_PG_HOST"}
    env["DAGSTER_HOME"] = str(topology.dagster_home(tmp_path))
    wanted = 'environment variable "DAGSTER_PG_HOST" which is not set'
    for name, argv in {"daemon": [str(topology.BIN / "dagster-daemon"), "run", "-w", workspace],
                       "webserver": [str(topology.BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1",
                                     "-p", str(free_port())]}.items():
        code, out = topology.run_until_exit(argv, env, tmp_path / f"{name}.log", tmp_path, timeout=60)
        assert code not in (None, 0), f"{name} kept running without DAGSTER_PG_HOST:\n{out[-2000:]}"
        assert [line for line in out.splitlines() if wanted in line], out[-2000:]

    # a code server that does not answer: the webserver stays up and says which location and why
    dead = dict(production.topo.env, DAGSTER_GRPC_PORT=str(free_port()))
    (tmp_path / "unreachable").mkdir()
    web = topology.Topology(tmp_path / "unreachable", production.topo.home, dead, int(dead["DAGSTER_GRPC_PORT"]), free_port())
    web.start("webserver", [str(topology.BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1",
                            "-p", str(web.web_port)])
    try:
        line = web.wait("the unreachable code server in the log", lambda: next(
            (x for x in web.log("webserver").read_text(errors="replace").splitlines()
             if "Error loading repository location erp_backup_pipeline" in x
             and "Could not reach user code server" in x), None), 60)
        assert "UNAVAILABLE" in line
        assert web.wait("location status", lambda: topology.location_status(web), 30) == "PythonError"
    finally:
        web.stop()


def test_a_wrong_s3_credential_in_the_deployed_config_is_named_in_one_line_of_the_daemon_log(
        production: Production, pg_server: PostgresServer, strict_s3: StrictS3, tmp_path: Path) -> None:
    """The deployed config carries a wrong S3 secret (the endpoint checks signatures): the daemon's first sensor
    tick names the destination and the cause in one line of its log, long before the 02:00 backup would fail."""
    wrong = "wrong-Secret-3a9d0c-value"
    config = tmp_path / "erp-backup.yaml"
    settings = yaml.safe_load(production.config.read_text())
    config.write_text(yaml.safe_dump({**settings, "destinations": [strict_s3.destination(secret_access_key=wrong)]}))
    database = topology.create_dagster_database(pg_server)
    try:
        home = topology.dagster_home(tmp_path)
        port = free_port()
        env = topology.base_env(DAGSTER_HOME=str(home), ERP_BACKUP_CONFIG=str(config), DAGSTER_GRPC_HOST="127.0.0.1",
                                DAGSTER_GRPC_PORT=str(port), **database.env())
        stack = topology.Topology(tmp_path, home, env, port, free_port())
        stack.start("grpc", [str(topology.BIN / "dagster"), "api", "grpc", "-m", topology.MODULE, "--host",
                             "127.0.0.1", "--port", str(port)])
        try:
            stack.wait("code server port", lambda: topology.port_open(port), 60)
            stack.start_daemon()
            line = stack.wait("the unusable destination in the daemon's log", lambda: next(
                (x for x in stack.log("daemon").read_text(errors="replace").splitlines()
                 if "DESTINATION UNUSABLE" in x), None), 120)
        finally:
            stack.stop()
        assert "Sensor destination_health_sensor skipped: DESTINATION UNUSABLE: destination offsite: access denied " \
               "(SignatureDoesNotMatch: the secret access key does not belong to the access key id) on list " \
               f"s3://{strict_s3.bucket}/site-a/" in line, line
        for log in (stack.log("daemon"), stack.log("grpc")):
            text = log.read_text(errors="replace")
            assert wrong not in text and strict_s3.secret not in text
    finally:
        database.drop()


BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


def test_the_operator_sees_lineage_and_partitions_and_backfills_missing_dates_from_the_ui(
        production: Production, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    topo = production.topo
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"screenshots: {shots}")
    missing = days_ago(9, 8)
    assert production.backed_up(missing) == {}
    expect.set_options(timeout=60_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 2600})
            page.set_default_timeout(60_000)

            # the asset graph: every backup asset, and each one's upstream is its ERP source
            page.goto(f"{topo.url}/locations/{topology.LOCATION}/asset-groups/erp_backups")
            for asset in UPSTREAM:
                expect(page.locator(f'[data-tooltip="{asset}"]')).to_be_visible()
            for source in set(UPSTREAM.values()):
                expect(page.locator(f'[title="{source}"]')).to_be_visible()
            page.screenshot(path=shots / "01-asset-graph.png")
            for asset, source in UPSTREAM.items():
                page.goto(f"{topo.url}/assets/{asset}?view=lineage&lineageScope=upstream&lineageDepth=1")
                expect(page.locator(f'[data-tooltip="{source}"]')).to_be_visible()
                expect(page.locator(f'[data-tooltip="{asset}"]')).to_be_visible()
                nodes = {page.locator("[data-tooltip]").nth(i).get_attribute("data-tooltip")
                         for i in range(page.locator("[data-tooltip]").count())}
                assert nodes - {"erp_backups", "erp_sources", "External Asset"} == {asset, source}, (asset, nodes)
            page.screenshot(path=shots / "02-upstream-of-postgres-incremental.png")

            # the partitions view: materialized and missing dates; the chosen dates are missing
            page.goto(f"{topo.url}/assets/{ASSET}?view=partitions")
            expect(page.get_by_text(re.compile(r"^Missing \(\d+\)$"))).to_be_visible()
            before = int(re.search(r"\((\d+)\)", page.get_by_text(re.compile(r"^Materialized \(\d+\)$"))
                                   .inner_text()).group(1))  # type: ignore[union-attr]
            for day in missing:
                page.get_by_placeholder("Filter by name…").fill(day)
                row = page.locator(f'[title="{day}"]')
                expect(row).to_be_visible()
                expect(row.locator("xpath=../..").locator("div[style*='color-accent-green']")).to_have_count(0)
            page.get_by_placeholder("Filter by name…").fill("")
            page.screenshot(path=shots / "03-partitions-before.png")

            # the operator selects the missing dates and launches a backfill
            backfill = topology.backfill_from_the_ui(page, ASSET, missing[0], missing[1], 2,
                                                     shots / "04-backfill-dialog.png")
            topo.start_daemon()

            # the runs succeed: the daemon runs them, the backfill page lists them as succeeded
            runs = topology.wait_for_backfill_runs(topo, backfill, 2, BACKFILL_TIMEOUT)
            assert [r["status"] for r in runs] == ["SUCCESS"] * 2, runs
            page.goto(f"{topo.url}/runs/b/{backfill}?tab=runs")
            expect(page.get_by_text("Success", exact=True)).to_have_count(2)
            page.screenshot(path=shots / "05-backfill-runs.png")
            found = production.backed_up(missing)
            assert sorted(found) == missing

            # the partitions view now shows the dates materialized
            page.goto(f"{topo.url}/assets/{ASSET}?view=partitions")
            expect(page.get_by_text(f"Materialized ({before + 2})", exact=True)).to_be_visible()
            for day in missing:
                page.get_by_placeholder("Filter by name…").fill(day)
                expect(page.locator(f'[title="{day}"]').locator("xpath=../..")
                       .locator("div[style*='color-accent-green']")).to_have_count(1)
            page.screenshot(path=shots / "06-partitions-after.png")

            # a materialization: the artifact's size, checksum and URI, as the catalog holds them
            entry = found[missing[0]]
            page.goto(f"{topo.url}/assets/{ASSET}?view=partitions&partition={missing[0]}")
            expect(page.get_by_text("Latest materialization")).to_be_visible()
            for key, value in {"encrypted_bytes": str(entry.manifest.artifact_bytes),
                               "sha256": entry.manifest.artifact_sha256}.items():
                row = page.locator("tr", has=page.get_by_text(key, exact=True))
                expect(row).to_contain_text(value)
            s3 = production.settings.destinations[0]
            expect(page.locator("tr", has=page.get_by_text("dagster/uri", exact=True))).to_contain_text(
                f"s3://{s3.bucket}/{s3.prefix}/{entry.manifest.artifact_key}")  # type: ignore[union-attr]
            page.screenshot(path=shots / "07-materialization.png")
        finally:
            browser.close()


LAUNCH_RUN = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
    ... on LaunchRunSuccess { run { runId } } ... on RunConfigValidationInvalid { errors { message } }
    ... on UnauthorizedError { message } ... on PythonError { message } } }"""


def _launch_params(config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"params": {"selector": {"repositoryLocationName": topology.LOCATION, "repositoryName": "__repository__",
                                    "jobName": f"{ASSET}_job"}, "runConfigData": config or {},
                       "executionMetadata": {"tags": [{"key": "dagster/partition", "value": days_ago(20)[0]}]}}}


def test_a_run_config_overriding_the_config_file_is_refused_through_graphql(production: Production,
                                                                              tmp_path: Path) -> None:
    """The reported attack: an unauthenticated launchRun whose run config points the backup resource at a YAML file
    dropped in the uploads tree (another key, another destination). Dagster refuses it before a run exists."""
    planted = tmp_path / "uploads" / "evil.yaml"
    planted.parent.mkdir()
    planted.write_text(yaml.safe_dump({**yaml.safe_load(production.config.read_text()),
                                       "destinations": [{"type": "local", "path": str(tmp_path / "exfiltrated")}]}))
    runs_before = production.database.query("SELECT count(*) FROM runs")[0][0]
    result = production.topo.graphql(LAUNCH_RUN, _launch_params(
        {"resources": {"backup_settings": {"config": {"config_path": str(planted)}}}}))["launchRun"]
    assert result["__typename"] == "RunConfigValidationInvalid", result
    assert any('unexpected config entry "config_path"' in e["message"] for e in result["errors"]), result
    assert production.database.query("SELECT count(*) FROM runs")[0][0] == runs_before
    assert not (tmp_path / "exfiltrated").exists()


def test_operators_reach_only_a_read_only_ui_through_an_authenticating_tls_proxy(production: Production,
                                                                                 tmp_path: Path) -> None:
    """deploy/nginx/erp-backup-ui.conf in front of dagster-webserver --read-only, in a real browser: refused without
    credentials, the asset graph with them, and no way to launch a run."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright

    from erp_backup_pipeline_tests import ui_proxy

    topo = production.topo
    _, ro_port = ui_proxy.start_read_only_webserver(topo)
    proxy = ui_proxy.start_proxy(tmp_path / "nginx", ro_port, {"operator": "op-Pw-2c81f0"})
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"screenshots: {shots}")
    try:
        topo.wait("nginx", lambda: topology.port_open(proxy.port), 30)
        assert proxy.request("/server_info")[0] == 401
        assert proxy.request("/server_info", auth=("operator", "wrong"))[0] == 401
        status, body = proxy.request("/graphql", {"query": LAUNCH_RUN, "variables": _launch_params()})
        assert status == 401, body
        status, body = proxy.request("/graphql", {"query": LAUNCH_RUN, "variables": _launch_params()},
                                     auth=("operator", "op-Pw-2c81f0"))
        assert status == 200 and json.loads(body)["data"]["launchRun"]["__typename"] == "UnauthorizedError", body
        runs = production.database.query("SELECT count(*) FROM runs WHERE run_id IN (SELECT run_id FROM run_tags "
                                         "WHERE key = 'dagster/partition' AND value = %s)", (days_ago(20)[0],))
        assert runs == [(0,)]

        expect.set_options(timeout=60_000)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=BROWSER_ARGS)
            try:
                anonymous = browser.new_context(ignore_https_errors=True).new_page()
                with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):  # the browser got a 401
                    anonymous.goto(proxy.url + "/")
                assert anonymous.request.get(proxy.url + "/").status == 401

                context = browser.new_context(ignore_https_errors=True,
                                              http_credentials={"username": "operator", "password": "op-Pw-2c81f0"},
                                              viewport={"width": 1600, "height": 1600})
                page = context.new_page()
                page.set_default_timeout(60_000)
                page.goto(f"{proxy.url}/locations/{topology.LOCATION}/asset-groups/erp_backups")
                for asset in UPSTREAM:
                    expect(page.locator(f'[data-tooltip="{asset}"]')).to_be_visible()
                page.screenshot(path=shots / "01-asset-graph-read-only.png")
                page.goto(f"{proxy.url}/assets/{ASSET}?view=partitions")
                expect(page.get_by_text(re.compile(r"^Materialized \(\d+\)$"))).to_be_visible()
                button = page.get_by_role("button", name=re.compile("Materialize"))
                expect(button.first).to_be_disabled()
                page.screenshot(path=shots / "02-materialize-disabled.png")
            finally:
                browser.close()
        assert "op-Pw-2c81f0" not in (proxy.base / "access.log").read_text()
    finally:
        proxy.stop()
        stop_process(topo.procs.pop("webserver-readonly"))
