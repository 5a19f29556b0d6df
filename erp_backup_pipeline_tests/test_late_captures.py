"""The Dagster UI tells the truth about dates: a late capture (a live capture of a day that was over) says it holds the
data of the day it ran, in the materialization, `erp-backup list` and the retention plan; an installation may refuse
late captures; a past postgres_dump date with point-in-time recovery on is recovered from the archive; the partitions
begin at the installation's first day."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest
import yaml

from erp_backup_pipeline.core import late
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.retention import RetentionPolicy, plan
from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS, build_backup_asset, source_spec
from erp_backup_pipeline.orchestration.definitions import build_definitions
from erp_backup_pipeline.orchestration.late_captures import LATE_TAG
from erp_backup_pipeline.orchestration.partitions import DEFAULT_START, daily
from erp_backup_pipeline.orchestration.pitr import build_backfill_job, build_pitr_asset
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource
from erp_backup_pipeline.orchestration.schedules import build_job
from erp_backup_pipeline.settings import load_settings
from erp_backup_pipeline_tests import pitr_cluster as cluster
from erp_backup_pipeline_tests.conftest import ERP_PASSWORD, catalog_entries
from erp_backup_pipeline_tests.pitr_cluster import PitrCluster, pitr_section
from erp_backup_pipeline_tests.test_cli import cli
from erp_backup_pipeline_tests.test_dagster import write_config
from erp_backup_pipeline_tests.test_retention import at, entry

pitr_cluster = cluster.pitr_cluster
BERLIN = ZoneInfo("Europe/Berlin")
PAST = "2026-11-25"


def today() -> str:
    return datetime.now(BERLIN).date().isoformat()


def refused_line(partition: str) -> str:
    return (f"late captures are refused (partitions.late_captures: refuse): {partition} is over, and a capture now "
            f"would hold the data of {today()}; nothing was backed up")


def materialize(name: str, config: Path, partition: str,
                instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    info = BACKUP_ASSETS[name]
    return dg.materialize([build_backup_asset(info), source_spec(info)], partition_key=partition, instance=instance,
                          resources={"backup_settings": BackupSettingsResource.pinned(str(config))},
                          raise_on_error=False)


def materialization(result: dg.ExecuteInProcessResult) -> tuple[dict[str, Any], dict[str, str]]:
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}, dict(event.materialization.tags or {})


def logs(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> list[str]:
    return [record.user_message or "" for record in instance.all_logs(result.run_id)]


def failure_line(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [e for e in result.all_events if e.is_step_failure]
    return str(failure.step_failure_data.user_failure_data.description)


def files_under(*dirs: Path) -> list[Path]:
    return [p for d in dirs if d.exists() for p in d.rglob("*") if p.is_file()]


# ------------------------------------------------------------------- what a manifest's data is as of


def test_the_date_of_the_data_is_derived_from_the_manifest() -> None:
    on_time = entry("sqlite_backup", date(2026, 11, 25), at(date(2026, 11, 25), 23, 59)).manifest
    found = late.of(on_time)
    assert found is not None and not found.late and found.as_of == datetime.fromisoformat(on_time.captured_at)
    backfilled = entry("sqlite_backup", date(2026, 11, 29), at(date(2026, 12, 2), 0, 0)).manifest  # midnight after
    found = late.of(backfilled)
    assert found is not None and found.late and found.day == "2026-12-02"
    assert found.note() == "late capture: captured on 2026-12-02, holds the data of 2026-12-02, not of 2026-11-29"
    assert found.iso == "2026-12-02T00:00:00+01:00"
    # the 25-hour day: 00:30 Berlin on 2026-10-26 is 23:30 UTC on 2026-10-25, after that day's end
    dst = entry("sqlite_backup", date(2026, 10, 25), datetime(2026, 10, 25, 23, 30, tzinfo=UTC)).manifest
    assert late.late_note(dst) == "late capture: captured on 2026-10-26, holds the data of 2026-10-26, not of 2026-10-25"
    recovered = entry("postgres_dump", date(2026, 11, 20), at(date(2026, 12, 2), 9)).manifest
    recovered.mode = "pitr: recovered to 2026-11-21T00:00:00+01:00 from backup set 20261120-020003F"
    found = late.of(recovered)
    assert found is not None and found.recovered and not found.late and found.day == "2026-11-20"
    assert found.iso == "2026-11-21T00:00:00+01:00" and late.late_note(recovered) is None
    odd = entry("sqlite_backup", "not-a-date", at(date(2026, 12, 2))).manifest
    assert late.of(odd) is None and late.late_note(odd) is None


def test_the_retention_plan_names_a_late_capture() -> None:
    nightly = [entry("sqlite_backup", date(2026, 11, d), at(date(2026, 11, d))) for d in range(20, 27)]
    backfill = entry("sqlite_backup", date(2026, 11, 5), at(date(2026, 11, 26), 9))
    recovered = entry("sqlite_backup", date(2026, 11, 6), at(date(2026, 11, 26), 10))
    recovered.manifest.mode = "pitr: recovered to 2026-11-07T00:00:00+01:00 from backup set 20261106-020003F"
    rows = {r["partition"]: r["reason"] for r in plan([*nightly, backfill, recovered],
                                                      {"sqlite_backup": RetentionPolicy(keep_daily=3)},
                                                      at(date(2026, 11, 26), 12)).as_rows()}
    assert rows["2026-11-05"].endswith("; late capture: captured on 2026-11-26, holds the data of 2026-11-26, "
                                       "not of 2026-11-05")
    assert rows["2026-11-05"].startswith("in no bucket of the policy")
    assert "late capture" not in rows["2026-11-06"] and "late capture" not in rows["2026-11-26"]


def test_retention_prefers_captures_of_their_own_date_to_late_ones() -> None:
    """A late re-capture of a date never pushes out the backup made on that date, and a late capture keeps a month
    only where the month has no capture of its own data; the dates a backfill filled stay (buckets by partition)."""
    src = "sqlite_backup"
    nov = [entry(src, date(2026, 11, d), at(date(2026, 11, d))) for d in range(1, 29)]  # 29 and 30 missed
    dec = [entry(src, date(2026, 12, d), at(date(2026, 12, d))) for d in range(1, 11)]
    late_29 = entry(src, date(2026, 11, 29), at(date(2026, 12, 2), 10))  # backfilled on 2 December
    again_5 = entry(src, date(2026, 11, 5), at(date(2026, 12, 3), 11))  # 5 November materialized again, late
    policy = RetentionPolicy(keep_daily=40, keep_monthly=12, keep_within=timedelta(days=2))
    result = plan([*nov, *dec, late_29, again_5], {src: policy}, at(date(2026, 12, 10), 12))
    kept = {e.manifest.captured_at: r for e, r in result.keep}
    gone = {e.manifest.captured_at: r for e, r in result.delete}
    # November's monthly is the last capture holding November's data, not the late one labelled 29 November,
    # which keeps its date as a daily
    assert kept[nov[-1].manifest.captured_at] == "daily 2026-11-28; monthly 2026-11"
    assert kept[late_29.manifest.captured_at] == "daily 2026-11-29"
    # the capture made on 5 November represents its date; the late re-capture of it goes
    assert kept[nov[4].manifest.captured_at] == "daily 2026-11-05"
    assert gone[again_5.manifest.captured_at].startswith(
        f"another capture of 2026-11-05 (the one captured {nov[4].manifest.captured_at} represents it)")
    rows = {(r["partition"], r["captured_at"]): r["reason"] for r in result.as_rows()}
    assert rows[("2026-11-05", again_5.manifest.captured_at)].endswith(
        "late capture: captured on 2026-12-03, holds the data of 2026-12-03, not of 2026-11-05")
    # a month with nothing but late captures is kept by the newest of them, named as such
    backfilled = [entry(src, date(2026, 10, d), at(date(2026, 12, 1), d)) for d in (20, 21, 22)]
    only_late = plan([*backfilled, *dec], {src: RetentionPolicy(keep_daily=3, keep_monthly=3)},
                     at(date(2026, 12, 10), 12))
    reasons_of = {r["partition"]: r["reason"] for r in only_late.as_rows()}
    assert reasons_of["2026-10-22"].startswith("monthly 2026-10;"), reasons_of["2026-10-22"]
    assert reasons_of["2026-10-21"].startswith("in no bucket")


# ------------------------------------------------------------------- in Dagster, in list, in prune


def test_a_late_capture_says_so_in_dagster_and_a_current_one_does_not(tmp_path: Path, demo_sqlite,
                                                                     age_identity) -> None:
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    instance = dg.DagsterInstance.ephemeral()
    backfill = materialize("sqlite_backup", config, PAST, instance)
    assert backfill.success
    md, tags = materialization(backfill)
    day = today()
    assert md["late_capture"] == f"late capture: captured on {day}, holds the data of {day}, not of {PAST}"
    assert md["data_as_of"].startswith(day + "T")  # the capture time, in Berlin
    assert datetime.fromisoformat(md["data_as_of"]) == datetime.fromisoformat(md["captured_at"])
    assert tags[LATE_TAG] == f"data-of-{day}"
    said = [line for line in logs(backfill, instance) if line.startswith(f"partition {PAST} is over: ")]
    assert len(said) == 1 and said[0].endswith(f"Europe/Berlin), not of {PAST}"), said
    assert f"this capture holds the data of now ({day} " in said[0]

    current = materialize("sqlite_backup", config, day, instance)
    assert current.success
    md, tags = materialization(current)
    assert "late_capture" not in md and LATE_TAG not in tags
    assert datetime.fromisoformat(md["data_as_of"]) == datetime.fromisoformat(md["captured_at"])
    assert not [line for line in logs(current, instance) if " is over: " in line]


def test_list_and_the_prune_plan_mark_a_late_capture(tmp_path: Path, demo_sqlite, age_identity) -> None:
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    day = today()
    backfill = cli("backup", "sqlite", "--partition", PAST, config=config)
    assert backfill.stdout.strip().endswith(f"; late capture: captured on {day}, holds the data of {day}, not of {PAST}")
    current = cli("backup", "sqlite", config=config)
    assert "late capture" not in current.stdout + current.stderr
    rows = {r["partition"]: r for r in json.loads(cli("list", "--json", config=config).stdout)["captures"]}
    assert rows[PAST]["late"] is True and rows[PAST]["data_as_of"].startswith(day + "T")
    assert rows[day]["late"] is False and rows[day]["data_as_of"].startswith(day + "T")
    table = {line.split()[1]: line for line in cli("list", config=config).stdout.splitlines()[1:]}
    assert table[PAST].endswith(f"LATE: holds the data of {day}") and "LATE" not in table[day]
    note = f"late capture: captured on {day}, holds the data of {day}, not of {PAST}"
    dry = cli("prune", "--dry-run", config=config).stdout.splitlines()
    [past] = [line for line in dry if line.split()[1:2] == [PAST]]
    [now] = [line for line in dry if line.split()[1:2] == [day]]
    assert past.endswith(f"; {note}") and "late capture" not in now
    as_json = json.loads(cli("prune", "--dry-run", "--json", config=config).stdout)
    assert {r["partition"]: r["reason"].endswith(note) for r in as_json["rows"]} == {PAST: True, day: False}


def test_refused_late_captures_fail_in_one_line_and_touch_nothing(tmp_path: Path, demo_sqlite, age_identity) -> None:
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                          state_dir=str(tmp_path / "state"), partitions={"late_captures": "refuse"})
    touched = (tmp_path / "staging", tmp_path / "backups", tmp_path / "state")
    instance = dg.DagsterInstance.ephemeral()
    result = materialize("sqlite_backup", config, PAST, instance)
    assert not result.success and result.get_asset_materialization_events() == []
    assert failure_line(result) == refused_line(PAST)
    assert files_under(*touched) == []
    done = cli("backup", "sqlite", "--partition", PAST, config=config, check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == f"erp-backup: error: {refused_line(PAST)}\n"
    assert files_under(*touched) == []
    # today's date is no late capture: backed up as ever
    assert materialize("sqlite_backup", config, today(), instance).success
    assert [e.manifest.partition for e in catalog_entries(load_settings(config))] == [today()]


# ------------------------------------------------------------------- where the partitions begin


def daily_partitions_of(defs: dg.Definitions) -> dict[str, Any]:
    graph = defs.resolve_asset_graph()
    return {key.to_user_string(): graph.get(key).partitions_def for key in graph.get_all_asset_keys()
            if graph.get(key).partitions_def is not None}


def test_the_partitions_begin_at_the_configured_first_day(tmp_path: Path, demo_sqlite, age_identity) -> None:
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                          partitions={"start": "2026-11-20"})
    defs = build_definitions(str(config))
    found = daily_partitions_of(defs)
    days = daily("2026-11-20")
    # what this installation backs up (the sources it does not have are not partitioned: unconfigured_spec)
    assert set(found) == {"sqlite_backup", "backup_retention", "backup_catalog_audit"}
    assert all(p == days for p in found.values()), found
    assert days.get_first_partition_key() == "2026-11-20"
    for job in ["sqlite_backup_job", "backup_retention_job", "backup_catalog_audit_job"]:
        assert defs.resolve_job_def(job).partitions_def == days, job
    # every factory takes the installation's days: the pitr assets' (hourly from them), every backup job's
    hourly = build_pitr_asset("postgres_incremental", days).partitions_def
    assert hourly is not None and hourly.get_first_partition_key() == "2026-11-20-00:00"
    assert build_pitr_asset("postgres_full", days).partitions_def == days
    for name in BACKUP_ASSETS:
        assert build_job(name, partitions=days).partitions_def == days, name
    assert build_backfill_job(days).partitions_def == days
    job = defs.resolve_job_def("sqlite_backup_job")
    with pytest.raises(dg.DagsterUnknownPartitionError):
        job.execute_in_process(partition_key="2026-11-19", instance=dg.DagsterInstance.ephemeral())
    assert job.execute_in_process(partition_key="2026-11-20", instance=dg.DagsterInstance.ephemeral()).success
    # a start in the future is a configuration error, in one line
    tomorrow = (datetime.now(BERLIN).date() + timedelta(days=1)).isoformat()
    bad = write_config(tmp_path, age_identity, partitions={"start": tomorrow})
    out = cli("list", config=bad, check=False)
    assert out.returncode == 1 and out.stderr == (f"erp-backup: error: config {bad}: partitions.start: {tomorrow} is "
                                                  f"in the future (today is {today()} in Europe/Berlin)\n")


def first_partition(config: Path) -> str:
    return str(daily_partitions_of(build_definitions(str(config)))["sqlite_backup"].get_first_partition_key())


def test_without_a_start_the_partitions_begin_at_this_hosts_first_backup(tmp_path: Path, demo_sqlite,
                                                                        age_identity) -> None:
    # an installation that has backed up since 2026-11-20: the first load decides that day, and keeps it
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                          state_dir=str(tmp_path / "state"))
    settings = load_settings(config)
    run_backup(settings, "sqlite_backup", today())
    [lock] = (tmp_path / "state" / "chain").glob("*.lock")
    then = datetime(2026, 11, 20, 2, 0, tzinfo=BERLIN).timestamp()
    os.utime(lock, (then, then))
    assert first_partition(config) == "2026-11-20"
    run_backup(settings, "sqlite_backup", today())
    assert lock.stat().st_mtime == then  # later backups leave the record as it is
    assert (tmp_path / "state" / "partitions_start").read_text() == "2026-11-20\n"
    os.utime(lock, None)  # whatever happens to the record afterwards, the UI and every run keep the day decided
    assert first_partition(config) == "2026-11-20"
    # the configuration's start wins
    config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "partitions": {"start": "2026-12-01"}}))
    assert first_partition(config) == "2026-12-01"


def test_a_code_location_loaded_before_the_first_backup_keeps_its_dates_after_it(tmp_path: Path, demo_sqlite,
                                                                                age_identity) -> None:
    """The code server loads before any backup; each run's worker loads the definitions again later. Both must know
    the dates the UI offers, or a backfill's later runs fail."""
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                          state_dir=str(tmp_path / "state"))
    server = build_definitions(str(config))
    assert daily_partitions_of(server)["sqlite_backup"].get_first_partition_key() == DEFAULT_START
    instance = dg.DagsterInstance.ephemeral()
    for day in ("2026-11-21", "2026-11-22"):  # a backfill: each run's worker loads the definitions anew
        worker = build_definitions(str(config))
        assert worker.resolve_job_def("sqlite_backup_job").execute_in_process(partition_key=day,
                                                                              instance=instance).success
    assert list((tmp_path / "state" / "chain").glob("*.lock")) and first_partition(config) == DEFAULT_START


def test_init_writes_its_own_day_as_the_start(tmp_path: Path) -> None:
    var = tmp_path / "var"
    cli("init", "--var", str(var))
    config = var / "erp-backup.yaml"
    assert load_settings(config).partitions.start == datetime.now(BERLIN).date()
    assert daily_partitions_of(build_definitions(str(config)))["sqlite_backup"].get_first_partition_key() == today()


# ------------------------------------------------------------------- a past postgres_dump date from the archive


def erp_database(c: PitrCluster) -> dict[str, Any]:
    """A database with an invoices table owned by erp_user in the archiving cluster: its source section."""
    c.sql(f"CREATE ROLE erp_user LOGIN CREATEDB PASSWORD '{ERP_PASSWORD}'")
    c.sql("CREATE DATABASE erp OWNER erp_user")
    with psycopg.connect(c.server.dsn("erp", "erp_user", ERP_PASSWORD), autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int PRIMARY KEY)")
    return {"postgres": {"host": "127.0.0.1", "port": c.server.port, "user": "erp_user", "password": ERP_PASSWORD,
                         "dbname": "erp", "sslmode": "disable"}}


def insert(c: PitrCluster, first: int, last: int) -> None:
    with psycopg.connect(c.server.dsn("erp", "erp_user", ERP_PASSWORD), autocommit=True) as conn:
        conn.execute(f"INSERT INTO invoices SELECT generate_series({first}, {last})")


def count(c: PitrCluster, dbname: str) -> int:
    with psycopg.connect(c.server.dsn(dbname, "erp_user", ERP_PASSWORD)) as conn:
        return int(conn.execute("SELECT count(*) FROM invoices").fetchone()[0])  # type: ignore[index]


def test_a_past_postgres_dump_date_is_recovered_from_the_archive(pitr_cluster: PitrCluster, tmp_path: Path,
                                                                 age_identity, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ordinary asset, for a day that is over, with pitr on: the day as the archive has it, not today's data.
    The archive here is minutes old, so the day's end (the recovery target) is moved to a moment it holds, between
    the day's 40 rows and 10 rows written after."""
    from erp_backup_pipeline.core.pitr import backfill
    from erp_backup_pipeline.core.restore import restore_backup

    c = pitr_cluster
    sources = erp_database(c)
    c.engine.backup("full")
    insert(c, 1, 40)
    time.sleep(1.1)
    end = datetime.now(UTC)
    time.sleep(1.1)
    insert(c, 41, 50)
    c.archive()
    monkeypatch.setattr(backfill, "end_of_day", lambda day: end)
    config = write_config(tmp_path, age_identity, sources=sources, pitr=pitr_section(c.base, pg_port=c.server.port),
                          partitions={"late_captures": "refuse"})  # recovered from the archive: not late
    yesterday = (datetime.now(BERLIN).date() - timedelta(days=1)).isoformat()
    instance = dg.DagsterInstance.ephemeral()
    result = materialize("postgres_dump", config, yesterday, instance)
    assert result.success, failure_line(result)
    md, tags = materialization(result)
    assert md["data_as_of"] == end.astimezone(BERLIN).isoformat(timespec="seconds")
    assert md["rows/public.invoices"] == 40 and "late_capture" not in md and LATE_TAG not in tags
    said = logs(result, instance)
    assert f"postgres_dump {yesterday}: the day is over; recovering it from the pgBackRest archive" in said
    assert not [line for line in said if " is over: this capture holds" in line]
    settings = load_settings(config)
    [capture] = catalog_entries(settings)
    assert capture.manifest.mode.startswith(f"pitr: recovered to {end.isoformat()} from backup set ")
    restore_backup(settings, "postgres_dump", yesterday, "erp_as_it_was")
    assert count(c, "erp_as_it_was") == 40 and count(c, "erp") == 50
    assert not list((c.base / "pgbr").glob("backfill-*"))  # the scratch cluster is gone


def test_a_day_the_archive_does_not_reach_is_captured_live_only_when_allowed(pitr_cluster: PitrCluster,
                                                                             tmp_path: Path, age_identity) -> None:
    c = pitr_cluster
    sources = erp_database(c)
    c.engine.backup("full")  # taken today: the archive does not reach back to the end of 2026-11-20
    insert(c, 1, 50)
    config = write_config(tmp_path, age_identity, sources=sources, pitr=pitr_section(c.base, pg_port=c.server.port))
    instance = dg.DagsterInstance.ephemeral()
    result = materialize("postgres_dump", config, "2026-11-20", instance)
    assert result.success, failure_line(result)
    md, tags = materialization(result)
    day = today()
    assert md["late_capture"] == f"late capture: captured on {day}, holds the data of {day}, not of 2026-11-20"
    assert md["rows/public.invoices"] == 50 and tags[LATE_TAG] == f"data-of-{day}"
    said = logs(result, instance)
    fallback = [line for line in said if line.startswith("postgres_dump 2026-11-20: the pgBackRest archive does not "
                                                         "reach it (target time 2026-11-21T00:00:00+01:00 is before "
                                                         "the end of the oldest backup")]
    assert len(fallback) == 1 and fallback[0].endswith("): capturing live instead"), said
    assert any(line.startswith("partition 2026-11-20 is over: this capture holds the data of now") for line in said)
    [capture] = catalog_entries(load_settings(config))
    assert capture.manifest.mode == "live"

    refusing = write_config(tmp_path, age_identity, sources=sources, partitions={"late_captures": "refuse"},
                            pitr=pitr_section(c.base, pg_port=c.server.port))
    before = files_under(tmp_path / "backups")
    refused = materialize("postgres_dump", refusing, "2026-11-19", instance)
    assert not refused.success
    line = failure_line(refused)
    assert line.startswith(refused_line("2026-11-19").removesuffix("; nothing was backed up") + "; the pgBackRest "
                           "archive does not reach it (target time 2026-11-20T00:00:00+01:00 is before the end of the "
                           "oldest backup") and line.endswith("; nothing was backed up") and "\n" not in line
    assert files_under(tmp_path / "backups") == before and files_under(tmp_path / "staging") == []
    assert not list((c.base / "pgbr").glob("backfill-*"))

