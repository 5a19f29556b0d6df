"""Session fixtures: a throwaway PostgreSQL cluster and moto's S3 server, both real, on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from erp_backup_pipeline.settings import Settings, parse_settings
from erp_backup_pipeline_devkit.servers import (
    MotoServer,
    PostgresServer,
    RedisServer,
    start_moto,
    start_postgres,
    start_redis,
)

ERP_PASSWORD = "erp-Pw-7f3a9c-secret"
S3_SECRET = "s3-Secret-41b8e2-value"
S3_KEY_ID = "testing-key-id"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE erp_user LOGIN CREATEDB PASSWORD '{ERP_PASSWORD}'")
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class StrictS3:
    """An S3 endpoint that checks credentials, with one bucket and one access key allowed to use it."""

    server: MotoServer
    bucket: str
    key_id: str
    secret: str

    def destination(self, **extra: Any) -> dict[str, Any]:
        return {"type": "s3", "name": "offsite", "bucket": self.bucket, "prefix": "site-a",
                "endpoint_url": self.server.endpoint, "access_key_id": self.key_id, "secret_access_key": self.secret,
                **extra}


@pytest.fixture(scope="session")
def strict_s3() -> Iterator[StrictS3]:
    """moto checking signatures: three unsigned IAM requests make the backup user, its key and its S3 policy."""
    server = start_moto(unauthenticated_requests=3)
    try:
        iam = boto3.client("iam", endpoint_url=server.endpoint, region_name="us-east-1", aws_access_key_id="setup",
                           aws_secret_access_key="setup")
        iam.create_user(UserName="erp-backup")
        key = iam.create_access_key(UserName="erp-backup")["AccessKey"]
        iam.put_user_policy(UserName="erp-backup", PolicyName="backups", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        strict = StrictS3(server, "erp-strict", key["AccessKeyId"], key["SecretAccessKey"])
        boto3.client("s3", endpoint_url=server.endpoint, region_name="eu-central-1", aws_access_key_id=strict.key_id,
                     aws_secret_access_key=strict.secret).create_bucket(
            Bucket=strict.bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        yield strict
    finally:
        server.stop()


REDIS_PASSWORD = "redis-Pw-93c1d7-secret"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, password-protected Redis per test (so 'empty' and 'all keys' mean this test's keys)."""
    server = start_redis(REDIS_PASSWORD, tmp_path / "redis-src")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def empty_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(None, tmp_path / "redis-target")
    try:
        yield server
    finally:
        server.stop()


def redis_source(server: RedisServer, **extra: Any) -> dict[str, Any]:
    return {"redis": {"host": "127.0.0.1", "port": server.port, "password": server.password, **extra}}


@pytest.fixture
def s3_client(moto_server: MotoServer) -> Any:
    return boto3.client("s3", endpoint_url=moto_server.endpoint, region_name="eu-central-1",
                        aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET)


@pytest.fixture
def bucket(s3_client: Any) -> str:
    name = f"erp-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    return name


ERP_SCHEMA = """
CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, city text, created_at timestamptz NOT NULL);
CREATE TABLE articles (id bigserial PRIMARY KEY, sku text UNIQUE NOT NULL, price numeric(12,2) NOT NULL,
  attributes jsonb);
CREATE TABLE invoices (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers(id), number text UNIQUE,
  total numeric(12,2), issued_on date);
CREATE TABLE invoice_lines (id bigserial PRIMARY KEY, invoice_id bigint REFERENCES invoices(id),
  article_id bigint REFERENCES articles(id), quantity int, price numeric(12,2));
CREATE TABLE audit_log (id bigserial PRIMARY KEY, at timestamptz, actor text, details text);
INSERT INTO customers(name, city, created_at)
  SELECT 'Kunde ' || md5(i::text), (ARRAY['Berlin','Köln','Passau'])[1 + i % 3], now() - i * interval '1 hour'
  FROM generate_series(1, 500) i;
INSERT INTO articles(sku, price, attributes)
  SELECT 'ART-' || i, round((random() * 2000)::numeric, 2), jsonb_build_object('stone', md5(i::text), 'mm', i % 40)
  FROM generate_series(1, 200) i;
INSERT INTO invoices(customer_id, number, total, issued_on)
  SELECT 1 + i % 500, 'RE-' || i, round((random() * 10000)::numeric, 2), date '2026-01-01' + i % 300
  FROM generate_series(1, 2000) i;
INSERT INTO invoice_lines(invoice_id, article_id, quantity, price)
  SELECT 1 + i % 2000, 1 + i % 200, 1 + i % 7, round((random() * 500)::numeric, 2) FROM generate_series(1, 6000) i;
INSERT INTO audit_log(at, actor, details)
  SELECT now(), 'system', repeat(md5(i::text), 3) FROM generate_series(1, 3000) i;
ANALYZE;
"""


@pytest.fixture
def erp_db(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh ERP-like database owned by erp_user; dropped afterwards."""
    name = f"erp_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER erp_user')
    with psycopg.connect(pg_server.dsn(name, "erp_user", ERP_PASSWORD), autocommit=True) as conn:
        conn.execute(ERP_SCHEMA)
    yield name
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",)).fetchall()
        for (db,) in rows:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


GPG_RECIPIENT = "erp-backup-test@example.invalid"


@pytest.fixture(scope="session")
def gpg_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A throwaway GnuPG home with one key pair (no passphrase), as a team's existing key.

    gpg starts a gpg-agent for the home; it is stopped afterwards so no process outlives the tests."""
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    try:
        subprocess.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key",
                        GPG_RECIPIENT, "default", "default", "never"], check=True, capture_output=True)
        yield home
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False, capture_output=True)


@pytest.fixture(scope="session")
def age_identity(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from erp_backup_pipeline.core.codecs.age import generate_identity

    path = tmp_path_factory.mktemp("keys") / "backup.key"
    public = generate_identity(path)
    return path, public


_SIGNING_KEY: list[Path] = []


def signing_key() -> Path:
    """One manifest signing key for the whole test session (0600, in its own temp dir, removed at exit)."""
    if not _SIGNING_KEY:
        import atexit
        import tempfile

        from erp_backup_pipeline.core.signing import generate

        home = Path(tempfile.mkdtemp(prefix="erp-backup-signing-"))
        atexit.register(shutil.rmtree, home, True)
        generate(home / "signing.key")
        _SIGNING_KEY.append(home / "signing.key")
    return _SIGNING_KEY[0]


def signing_section() -> dict[str, Any]:
    """The configuration's ``signing`` section for tests."""
    return {"key_file": str(signing_key())}


def sign_file(path: Path) -> None:
    """Sign a manifest file in place with the tests' signing key: what only the backing-up host can do. Tests of
    hostile manifest *content* use it (a signed manifest is still checked field by field); an attacker without
    the key cannot."""
    from erp_backup_pipeline.core.signing import SIGNATURE_SUFFIX, load_signer

    Path(str(path) + SIGNATURE_SUFFIX).write_bytes(load_signer(signing_key()).sign(path.read_bytes()))


def spy_on(monkeypatch: pytest.MonkeyPatch, method: str) -> list[tuple[str, str]]:
    """Records (destination name, key) of every call of ``method`` (delete, open_reader, ...) on the local and S3
    destinations, in order; the calls themselves are real."""
    from erp_backup_pipeline.core.destinations import LocalDestination, S3Destination

    calls: list[tuple[str, str]] = []
    for cls in (LocalDestination, S3Destination):
        original = getattr(cls, method)

        def spy(self: Any, key: str, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            calls.append((self.name, key))
            return _original(self, key, *args, **kwargs)

        monkeypatch.setattr(cls, method, spy)
    return calls


def make_settings(tmp_path: Path, age_identity: tuple[Path, str], *, destinations: list[dict[str, Any]] | None = None,
                  sources: dict[str, Any] | None = None, **extra: Any) -> Settings:
    data: dict[str, Any] = {
        "staging_dir": str(tmp_path / "staging"),
        "encryption": {"codec": "age", "recipients": [age_identity[1]], "identity_file": str(age_identity[0])},
        "signing": signing_section(),
        "destinations": destinations or [{"type": "local", "name": "local", "path": str(tmp_path / "backups")}],
        "sources": sources or {},
        **extra,
    }
    return parse_settings(data, "test", tmp_path)


def catalog_entries(settings: Settings, source: str | None = None, partition: str | None = None,
                    destinations: Any = None) -> list[Any]:
    """The authenticated captures of the catalog (of the given destinations, or all configured ones)."""
    from erp_backup_pipeline.core import catalog

    return catalog.of(settings, source, partition, destinations=destinations).entries


def s3_destination(moto: MotoServer, bucket: str, **extra: Any) -> dict[str, Any]:
    return {"type": "s3", "name": "offsite", "bucket": bucket, "prefix": "site-a", "endpoint_url": moto.endpoint,
            "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET, **extra}


def stored_manifests(backups: Path, s3_client: Any, bucket: str) -> list[str]:
    """The text of every manifest (JSON) under a local destination root and in an S3 bucket, for secret scans."""
    texts = [p.read_text() for p in backups.rglob("*.json")]
    for obj in s3_client.list_objects_v2(Bucket=bucket).get("Contents", []):
        if obj["Key"].endswith(".json"):
            texts.append(s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode())
    return texts


def pg_source(pg: PostgresServer, dbname: str, **extra: Any) -> dict[str, Any]:
    return {"postgres": {"host": "127.0.0.1", "port": pg.port, "user": "erp_user", "dbname": dbname,
                         "password": ERP_PASSWORD, "sslmode": "disable", **extra}}


@pytest.fixture
def demo_sqlite(tmp_path: Path) -> Path:
    from erp_backup_pipeline.core.demo import fill_sqlite

    path = tmp_path / "erp" / "production.sqlite3"
    path.parent.mkdir(parents=True)
    fill_sqlite(path, customers=50, invoices=200)
    return path


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERP_BACKUP_CONFIG", raising=False)
    for var in ("PGPASSWORD", "PGHOST", "PGPORT", "PGUSER", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)


__all__ = ["ERP_PASSWORD", "REDIS_PASSWORD", "S3_SECRET", "make_settings", "pg_source", "redis_source", "s3_destination",
           "catalog_entries", "sign_file", "signing_key", "signing_section", "spy_on", "stored_manifests"]
