"""The production topology on one machine, for the end-to-end and browser tests.

A real PostgreSQL database holds Dagster's storage; ``dagster api grpc`` serves the code location;
``dagster-webserver`` and ``dagster-daemon`` load it through ``deploy/production/workspace.yaml``.
Every process gets ``DAGSTER_HOME`` holding a copy of ``deploy/production/dagster.yaml`` (unchanged:
the connection comes from ``DAGSTER_PG_*``), listens on loopback only, writes its output to a log
file beside the home, and is stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from erp_backup_pipeline_devkit.servers import PostgresServer, free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ROOT / "deploy" / "production"
MODULE = "erp_backup_pipeline.orchestration.definitions"
LOCATION = "erp_backup_pipeline"
BIN = Path(sys.executable).parent
T = TypeVar("T")


@dataclass
class DagsterDatabase:
    """A database (and its owner role) for Dagster's storage in the test cluster."""

    server: PostgresServer
    name: str
    user: str
    password: str

    def env(self) -> dict[str, str]:
        return {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.server.port), "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": self.name}

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.server.dsn(self.name, self.user, self.password)) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def drop(self) -> None:
        with psycopg.connect(self.server.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{self.user}"')


def create_dagster_database(server: PostgresServer) -> DagsterDatabase:
    suffix = uuid.uuid4().hex[:10]
    db = DagsterDatabase(server, f"dagster_{suffix}", f"dagster_{suffix}", f"dagster-Pw-{uuid.uuid4().hex[:12]}")
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE \"{db.user}\" LOGIN PASSWORD '{db.password}'")
        conn.execute(f'CREATE DATABASE "{db.name}" OWNER "{db.user}"')
    return db


def dagster_home(base: Path) -> Path:
    """A DAGSTER_HOME holding the shipped production dagster.yaml, byte for byte."""
    home = base / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PRODUCTION / "dagster.yaml", home / "dagster.yaml")
    return home


def base_env(**extra: str) -> dict[str, str]:
    """The test process's environment without anything that could point Dagster or the backups elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DAGSTER_", "ERP_BACKUP_", "PG", "AWS_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def start_logged(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Topology:
    base: Path
    home: Path
    env: dict[str, str]
    grpc_port: int
    web_port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def log(self, name: str) -> Path:
        return self.base / f"{name}.log"

    def start(self, name: str, argv: list[str]) -> None:
        self.procs[name] = start_logged(argv, self.env, self.log(name), self.base)

    def alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log_tail(self.log(name))}")

    def wait(self, what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
        deadline = time.monotonic() + timeout
        while True:
            self.alive()
            try:
                found = check()
            except (OSError, urllib.error.URLError):
                found = None
            if found:
                return found
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}.log\n{log_tail(self.log(n), 15)}" for n in self.procs)
                raise TimeoutError(f"{what}: not within {timeout:.0f} s\n{logs}")
            time.sleep(interval)

    def start_daemon(self) -> None:
        """The daemon (schedules, sensors, backfills, run queue); idempotent. Its first backfill iteration runs
        at start and the next ones every 30 s, so a backfill launched before it starts is picked up at once."""
        if "daemon" not in self.procs:
            self.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(PRODUCTION / "workspace.yaml")])

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = json.load(resp)
        if answer.get("errors"):
            raise RuntimeError(f"GraphQL errors: {answer['errors']}")
        return dict(answer["data"])

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 60) -> int:
        """Sends ``sig`` to the process group of ``name`` (started in its own session, so the group id is its PID:
        the process and every child it started, nothing else), waits for the process to exit and forgets it, so
        that it can be started again (``start_daemon``); returns its exit code."""
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TimeoutError(f"{name} still running {timeout:.0f} s after signal {sig}; killed") from None

    def stop(self) -> None:
        # webserver and daemon first (they talk to the code server), the code server last
        for name in ("webserver", "daemon", "grpc"):
            if name in self.procs:
                stop_process(self.procs[name])


def definition_pools() -> set[str]:
    """Every concurrency pool an op or check of the code location is in."""
    from erp_backup_pipeline.orchestration.pools import pools

    return set(pools())


def initialize_pools(env: dict[str, str], log: Path, cwd: Path) -> None:
    """The deployment step: every pool gets its limit (1) in the instance before the first run is queued.
    Dagster 1.13's run queue gives a pool it has never seen its default_limit only after the dequeue pass that
    first sees it, so without this the first runs queued on a fresh instance (a backfill's dates) would start
    together."""
    for pool in sorted(definition_pools()):
        with open(log, "ab") as out:
            subprocess.run([str(BIN / "dagster"), "instance", "concurrency", "set", pool, "1"], env=env, cwd=cwd,
                           stdout=out, stderr=subprocess.STDOUT, check=True, timeout=120)


def start_topology(base: Path, config: Path, database: DagsterDatabase) -> Topology:
    """Code server and webserver of the production topology; returns once the UI has loaded the location.
    The daemon is started by :meth:`Topology.start_daemon`."""
    base.mkdir(parents=True, exist_ok=True)
    home = dagster_home(base)
    grpc_port, web_port = free_port(), free_port()
    env = base_env(DAGSTER_HOME=str(home), ERP_BACKUP_CONFIG=str(config), DAGSTER_GRPC_HOST="127.0.0.1",
                   DAGSTER_GRPC_PORT=str(grpc_port), **database.env())
    topo = Topology(base, home, env, grpc_port, web_port)
    workspace = str(PRODUCTION / "workspace.yaml")
    initialize_pools(env, base / "pools.log", base)
    try:
        topo.start("grpc", [str(BIN / "dagster"), "api", "grpc", "-m", MODULE, "--host", "127.0.0.1",
                            "--port", str(grpc_port)])
        topo.wait("code server port", lambda: port_open(grpc_port), 60)
        topo.start("webserver", [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1",
                                 "-p", str(web_port)])
        topo.wait("webserver /server_info",
                  lambda: urllib.request.urlopen(f"{topo.url}/server_info", timeout=2).status == 200, 90)
        topo.wait("code location loaded", lambda: location_status(topo) == "RepositoryLocation", 60)
    except BaseException:
        topo.stop()
        raise
    return topo


@contextmanager
def demo_stack(base: Path, pg_server: PostgresServer, moto_server: Any, age_identity: tuple[Path, str],
               bucket: str) -> Iterator[tuple[Topology, DagsterDatabase, Path]]:
    """The production topology backing up a demo SQLite ERP (50 customers, 200 invoices) to ``bucket`` (created
    here) on moto's S3 server, with Dagster's storage in a new database of ``pg_server``; yields the topology, that
    database and the config file. Stopped and dropped afterwards; the logs' directory is printed."""
    import boto3
    import yaml

    from erp_backup_pipeline.core.demo import fill_sqlite
    from erp_backup_pipeline_tests.conftest import S3_KEY_ID, S3_SECRET, s3_destination, signing_section

    boto3.client("s3", endpoint_url=moto_server.endpoint, region_name="eu-central-1", aws_access_key_id=S3_KEY_ID,
                 aws_secret_access_key=S3_SECRET).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    sqlite = base / "erp" / "production.sqlite3"
    sqlite.parent.mkdir()
    fill_sqlite(sqlite, customers=50, invoices=200)
    config = base / "erp-backup.yaml"
    config.write_text(yaml.safe_dump({
        "staging_dir": str(base / "staging"), "state_dir": str(base / "state"),
        "encryption": {"recipients": [age_identity[1]], "identity_file": str(age_identity[0])},
        "signing": signing_section(),
        "destinations": [s3_destination(moto_server, bucket)],
        "sources": {"sqlite": {"path": str(sqlite)}}}))
    database = create_dagster_database(pg_server)
    try:
        topo = start_topology(base / "stack", config, database)
        try:
            yield topo, database, config
        finally:
            topo.stop()
            print(f"topology logs: {topo.base}")
    finally:
        database.drop()


def location_status(topo: Topology) -> str | None:
    data = topo.graphql("""{ workspaceOrError { ... on Workspace { locationEntries { name
        locationOrLoadError { __typename ... on PythonError { message } } } } } }""")
    for entry in data["workspaceOrError"]["locationEntries"]:
        if entry["name"] == LOCATION and entry["locationOrLoadError"]:
            return str(entry["locationOrLoadError"]["__typename"])
    return None


def launch_asset_backfill(topo: Topology, asset: str, partitions: list[str]) -> str:
    """An asset backfill as the UI's Materialize… dialog launches it: Dagster's implicit asset job, no run tags of
    ours (the runs are kept apart by the ops' concurrency pools, not by a tag)."""
    data = topo.graphql("""mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
        __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
        ... on InvalidSubsetError { message } ... on UnauthorizedError { message } } }""",
                        {"params": {"assetSelection": [{"path": [asset]}], "partitionNames": partitions}})
    result = data["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"backfill not launched: {result}")
    return str(result["backfillId"])


def backfill_from_the_ui(page: Any, asset: str, first: str, last: str, count: int, shot: Path) -> str:
    """On an asset's partitions page, as an operator does: Materialize…, the dates ``[first...last]`` in the
    partition picker (``count`` of them), a screenshot of the dialog to ``shot``, Launch backfill; the backfill's id
    from the toast."""
    import re

    from playwright.sync_api import expect

    page.get_by_role("button", name="Materialize…").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(f"Launch runs to materialize {asset}")).to_be_visible()
    picker = dialog.get_by_placeholder("No matching partitions")
    picker.fill(f"[{first}...{last}]")
    picker.press("Enter")
    expect(dialog.get_by_text(f"{count} partitions", exact=True)).to_be_visible()
    page.screenshot(path=shot)
    dialog.get_by_role("button", name="Launch backfill").click()
    toast = page.get_by_text(re.compile(r"Created backfill \w+"))
    expect(toast).to_be_visible()
    found = re.search(r"Created backfill (\w+)", toast.inner_text())
    assert found is not None
    return found.group(1)


def backfill_runs(topo: Topology, backfill_id: str) -> list[dict[str, Any]]:
    data = topo.graphql("""query($id: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
        ... on Runs { results { runId status startTime endTime tags { key value } } } } }""", {"id": backfill_id})
    runs = data["runsOrError"]["results"]
    return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in runs]


def backfill_status(topo: Topology, backfill_id: str) -> str:
    """The backfill's status as the UI shows it (REQUESTED while the daemon works on it, COMPLETED_SUCCESS, ...)."""
    data = topo.graphql("""query($id: String!) { partitionBackfillOrError(backfillId: $id) {
        __typename ... on PartitionBackfill { status } ... on PythonError { message } } }""", {"id": backfill_id})
    found = data["partitionBackfillOrError"]
    if found["__typename"] != "PartitionBackfill":
        raise RuntimeError(f"backfill {backfill_id}: {found}")
    return str(found["status"])


def wait_for_backfill_runs(topo: Topology, backfill_id: str, count: int, timeout: float) -> list[dict[str, Any]]:
    """Waits until the backfill has ``count`` runs, all finished; returns them."""
    def finished() -> list[dict[str, Any]] | None:
        runs = backfill_runs(topo, backfill_id)
        done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
        return runs if len(runs) == count and len(done) == count else None

    return topo.wait(f"{count} finished runs of backfill {backfill_id}", finished, timeout, interval=1)


def run_until_exit(argv: list[str], env: dict[str, str], log: Path, cwd: Path, timeout: float) -> tuple[int | None, str]:
    """Starts a process that is expected to fail at start; returns its exit code (None: still running, then
    stopped by PID) and its output."""
    proc = start_logged(argv, env, log, cwd)
    try:
        code: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        stop_process(proc)
    return code, log.read_text(errors="replace")
