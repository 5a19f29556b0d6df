"""The Dagster daemon killed and restarted in the middle of an asset backfill, on the production topology.

The stack of ``test_production.py``, built here on its own: Dagster's storage in a real PostgreSQL database, the
shipped ``deploy/production/dagster.yaml`` and ``workspace.yaml`` unchanged, ``dagster api grpc``,
``dagster-webserver`` and ``dagster-daemon``, backups of a demo SQLite ERP to moto's S3 server. A backfill of three
missed dates is launched through GraphQL as the UI launches it; the daemon's process group gets SIGKILL (a crash, an
OOM kill) while it submits the runs, and later SIGTERM (``systemctl restart``) while a run is in progress; each time it
stays down a few seconds and is started again. Then every date must be backed up exactly once: three runs, all
successful, one artifact, one manifest and its signature per date on the bucket, each date once in the catalog and in
the source's signed chain, no upload left open.

What happens (seen here): the runs are subprocesses of the code server (DefaultRunLauncher), so the one in progress
finishes while the daemon is down; the run the killed daemon had created but not yet queued is queued by the restarted
daemon under its reserved id (no second run for that date); the queued runs are dequeued one at a time again.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from erp_backup_pipeline.core import catalog
from erp_backup_pipeline.settings import Settings, load_settings
from erp_backup_pipeline_devkit.servers import MotoServer, PostgresServer
from erp_backup_pipeline_tests import topology
from erp_backup_pipeline_tests.conftest import S3_KEY_ID, S3_SECRET

ASSET = "sqlite_backup"
BUCKET = "erp-daemon-restart"
DONE = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")
TIMEOUT = 150  # the backfill daemon ticks every 30 s; each run takes a few seconds


@dataclass
class Stack:
    topo: topology.Topology
    database: topology.DagsterDatabase
    settings: Settings
    s3: Any

    def runs(self, backfill: str) -> list[tuple[str, str]]:
        """(run id, status) of the backfill's runs, straight from Dagster's run storage."""
        return [(str(r), str(s)) for r, s in
                self.database.query("SELECT run_id, status FROM runs WHERE backfill_id = %s", (backfill,))]

    def objects(self, day: str) -> list[str]:
        prefix = f"site-a/{self.settings.prefix}/{ASSET}/{day}/"
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(obj["Key"][len(prefix):] for page in pages for obj in page.get("Contents", []))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pg_server: PostgresServer, moto_server: MotoServer,
          age_identity: tuple[Path, str]) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("daemon-restart")
    with topology.demo_stack(base, pg_server, moto_server, age_identity, BUCKET) as (topo, database, config):
        s3 = boto3.client("s3", endpoint_url=moto_server.endpoint, region_name="eu-central-1",
                          aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET)
        yield Stack(topo, database, load_settings(str(config)), s3)


def _runs_by_id(topo: topology.Topology, run_ids: list[str]) -> list[dict[str, Any]]:
    """The runs as Dagster stores them (status and tags from the run itself, not from the tag index)."""
    data = topo.graphql("""query($ids: [String!]) { runsOrError(filter: {runIds: $ids}) {
        ... on Runs { results { runId status tags { key value } } } } }""", {"ids": run_ids})
    return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in data["runsOrError"]["results"]]


def _partition(run: dict[str, Any]) -> str:
    return str(run["tags"]["dagster/partition"])  # one run per date, tagged with it


def test_the_daemon_killed_mid_submission_and_stopped_mid_run_backs_up_every_date_exactly_once(stack: Stack) -> None:
    """One backfill of three dates, two outages of the daemon: SIGKILL of its process group the moment the backfill's
    first run exists in storage (the daemon is submitting the runs), and SIGTERM (systemctl restart) while a run is
    in progress and the others wait in the queue behind the source's pool. Each time it stays down 3 s."""
    topo, db = stack.topo, stack.database
    days = [str(date.today() - timedelta(days=d)) for d in (40, 39, 38)]
    assert all(stack.objects(day) == [] for day in days)
    backfill = topology.launch_asset_backfill(topo, ASSET, days)
    t0 = time.monotonic()
    topo.start_daemon()

    with psycopg.connect(db.server.dsn(db.name, db.user, db.password), autocommit=True) as conn:
        def first_run() -> list[tuple[str, str]]:
            rows = conn.execute("SELECT run_id, status FROM runs WHERE backfill_id = %s", (backfill,)).fetchall()
            return [(str(r), str(s)) for r, s in rows]

        seen = topo.wait("the backfill's first run in storage", first_run, TIMEOUT, interval=0)
    assert topo.kill("daemon", signal.SIGKILL) == -signal.SIGKILL
    print(f"SIGKILL after {time.monotonic() - t0:.1f} s; the backfill's runs then: {seen}")
    time.sleep(3)
    assert stack.runs(backfill) == seen  # nothing moves while the daemon is down
    topo.start_daemon()

    def one_running_others_queued() -> list[tuple[str, str]] | None:
        runs = stack.runs(backfill)
        statuses = [s for _, s in runs]
        return runs if "STARTED" in statuses and "QUEUED" in statuses else None

    seen = topo.wait("a run in progress and another queued", one_running_others_queued, TIMEOUT, interval=0.01)
    assert topo.kill("daemon", signal.SIGTERM) == 0  # a graceful stop
    print(f"SIGTERM after {time.monotonic() - t0:.1f} s; the backfill's runs then: {seen}")
    time.sleep(3)
    topo.start_daemon()
    status = topo.wait("the backfill to finish",
                       lambda: (s := topology.backfill_status(topo, backfill)) in DONE and s, TIMEOUT, interval=1)
    stored = stack.runs(backfill)
    print(f"backfill {status} after {time.monotonic() - t0:.1f} s: {stored}")

    # exactly three runs, one per date, all successful: none lost with the daemon, none submitted twice
    assert status == "COMPLETED_SUCCESS", stored
    runs = _runs_by_id(topo, [r for r, _ in stored])
    assert len(stored) == len(runs) == 3, stored
    assert sorted(r["status"] for r in runs) == ["SUCCESS"] * 3, runs
    assert sorted(_partition(r) for r in runs) == days, runs
    # the UI's list of the backfill's runs comes from Dagster's tag index; a SIGKILL between Dagster's two
    # autocommitted inserts (the run, then its tags: SqlRunStorage._core_add_run) leaves a run out of it
    listed = {r["runId"] for r in topology.backfill_runs(topo, backfill)}
    assert listed <= {r["runId"] for r in runs}
    if len(listed) < 3:
        print(f"NOTE: {3 - len(listed)} run(s) missing from the backfill's run list in the UI: the SIGKILL came "
              "between the run's insert and its tags' insert (Dagster's run storage, not atomic)")

    # on the bucket: per date one artifact, its manifest and the manifest's signature, nothing else; the source's
    # chain ledger beside the dates; no upload left open
    for day in days:
        objects = stack.objects(day)
        assert len(objects) == 3, objects
        artifacts = [k for k in objects if k.endswith(".sqlite3.zst.age")]
        assert len(artifacts) == 1, objects
        stamp = artifacts[0].split(".")[0]
        assert objects == sorted([artifacts[0], f"{stamp}.manifest.json", f"{stamp}.manifest.json.sig"]), objects
    ledger = f"site-a/{stack.settings.prefix}/{ASSET}/chain.json"
    assert stack.s3.head_object(Bucket=BUCKET, Key=ledger)["ContentLength"] > 0
    assert stack.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []

    # the catalog: each date once, verified and complete, each signed into the source's chain once (no fork, no
    # missing link, nothing rejected)
    found = catalog.of(stack.settings, ASSET)
    assert (found.rejected, found.findings, found.gaps, found.errors) == ([], [], [], [])
    entries = [e for e in found.entries if e.manifest.partition in days]
    assert sorted(e.manifest.partition for e in entries) == days
    assert all(e.manifest.verify.get("ok") and e.manifest.complete for e in entries)
    assert len({e.manifest.sequence for e in found.entries}) == len(found.entries)
