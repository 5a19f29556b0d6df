"""pgBackRest's configuration, written from our site, and the lines an operator adds to postgresql.conf.

The file holds the repository's cipher passphrase and S3 key, so it is written 0600 for the OS user
that runs pgbackrest (PostgreSQL's archive_command runs as that user too). The postgresql.conf lines
are what current PostgreSQL needs (no ``recovery.conf``: restores use ``recovery.signal``).
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, SecretStr

from erp_backup_pipeline.core.config import Model, present, secret
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.errors import ConfigError


class PitrPosixRepo(Model):
    type: Literal["posix"]
    path: Path = Field(description="the pgBackRest repository directory (owned by os_user)")


class PitrS3Repo(Model):
    type: Literal["s3"]
    bucket: str
    endpoint: str = Field(description="host[:port] of the S3 endpoint; pgBackRest always speaks TLS")
    region: str = "eu-central-1"
    path: str = Field("/pgbackrest", description="prefix inside the bucket")
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    secret_access_key_file: Path | None = None
    uri_style: Literal["host", "path"] = "host"
    verify_tls: bool = True
    ca_file: Path | None = None

    def secret_key(self) -> str | None:
        return secret(self.secret_access_key, self.secret_access_key_file, "pitr.repo.secret_access_key_file")

    def secret_values(self) -> list[str]:
        return present(self.secret_key)


PitrRepo = Annotated[Union[PitrPosixRepo, PitrS3Repo], Field(discriminator="type")]


class PitrSettings(Model):
    """PostgreSQL point-in-time recovery through pgBackRest: physical backups plus continuous WAL archiving.

    The project writes pgBackRest's configuration from this section (``erp-backup pg setup``) and runs it
    as ``os_user`` (the data directory's owner), with ``runuser`` when started as root."""

    enabled: bool = True
    stanza: str = Field("erp", pattern=r"^[A-Za-z0-9_-]+$")
    pg_data: Path = Field(description="the cluster's data directory, on this host")
    pg_port: int = Field(5432, ge=1, le=65535)
    pg_socket_path: Path = Path("/var/run/postgresql")
    pg_user: str = Field("postgres", description="database superuser pgBackRest connects as")
    os_user: str = Field("postgres", description="OS user that runs pgbackrest (the data directory's owner)")
    pg_bin_dir: Path | None = Field(None, description="pg_ctl/postgres for restored clusters; default: pg_config --bindir")
    bin: Path | None = Field(None, description="the pgbackrest program; default: PATH")
    work_dir: Path | None = Field(None, description="generated pgbackrest.conf, logs, locks; default: <state_dir>/pgbackrest")
    repo: PitrRepo
    cipher_pass: SecretStr | None = Field(None, description="repository encryption (aes-256-cbc) passphrase")
    cipher_pass_file: Path | None = None
    compress_level: int = Field(3, ge=1, le=19, description="zstd level")
    process_max: int = Field(2, ge=1, le=64)
    archive_timeout: int = Field(60, ge=1, description="seconds: the RPO bound for a quiet database")
    retention_full_days: int = Field(7, ge=1, description="keep full backups (and the WAL they need) this many days")

    def secret_cipher_pass(self) -> str | None:
        return secret(self.cipher_pass, self.cipher_pass_file, "pitr.cipher_pass_file")

    def secret_values(self) -> list[str]:
        return present(self.secret_cipher_pass)


@dataclass(frozen=True)
class Layout:
    """Where pgBackRest's own files live (under ``pitr.work_dir``)."""

    work_dir: Path

    @property
    def config(self) -> Path:
        return self.work_dir / "pgbackrest.conf"

    @property
    def log(self) -> Path:
        return self.work_dir / "log"

    @property
    def lock(self) -> Path:
        return self.work_dir / "lock"

    @property
    def spool(self) -> Path:
        return self.work_dir / "spool"


@takes_site
def layout(site: Site) -> Layout:
    pitr = site.pgbackrest
    return Layout(Path(pitr.work_dir) if pitr.work_dir else site.state_dir / "pgbackrest")


@takes_site
def render(site: Site) -> str:
    """The text of pgbackrest.conf for ``site.pgbackrest`` (secrets included: write it 0600)."""
    pitr = site.pgbackrest
    where = layout(site)
    repo = pitr.repo
    lines = ["[global]"]
    if repo.type == "posix":
        lines += ["repo1-type=posix", f"repo1-path={repo.path}"]
    else:
        key_id = repo.access_key_id.get_secret_value() if repo.access_key_id else None
        secret = repo.secret_key()
        if not key_id or not secret:
            raise ConfigError("pitr.repo: an s3 repository needs access_key_id and secret_access_key")
        host, _, port = repo.endpoint.partition(":")
        lines += ["repo1-type=s3", f"repo1-path={repo.path}", f"repo1-s3-bucket={repo.bucket}",
                  f"repo1-s3-endpoint={host}", f"repo1-s3-region={repo.region}", f"repo1-s3-key={key_id}",
                  f"repo1-s3-key-secret={secret}", f"repo1-s3-uri-style={repo.uri_style}",
                  f"repo1-storage-verify-tls={'y' if repo.verify_tls else 'n'}"]
        if port:
            lines.append(f"repo1-storage-port={port}")
        if repo.ca_file:
            lines.append(f"repo1-storage-ca-file={repo.ca_file}")
    cipher = pitr.secret_cipher_pass()
    if cipher:
        lines += ["repo1-cipher-type=aes-256-cbc", f"repo1-cipher-pass={cipher}"]
    lines += ["repo1-retention-full-type=time", f"repo1-retention-full={pitr.retention_full_days}",
              "compress-type=zst", f"compress-level={pitr.compress_level}", f"process-max={pitr.process_max}",
              "start-fast=y", "archive-check=y", f"log-path={where.log}", f"lock-path={where.lock}",
              f"spool-path={where.spool}", "log-level-console=warn", "log-level-file=info", "",
              f"[{pitr.stanza}]", f"pg1-path={pitr.pg_data}", f"pg1-port={pitr.pg_port}",
              f"pg1-socket-path={pitr.pg_socket_path}", f"pg1-user={pitr.pg_user}", ""]
    return "\n".join(lines)


@takes_site
def postgresql_lines(site: Site, program: str = "pgbackrest") -> list[str]:
    """What postgresql.conf needs for continuous archiving into this stanza."""
    pitr = site.pgbackrest
    conf = layout(site).config
    return ["wal_level = replica", "archive_mode = on",
            f"archive_command = '{program} --config={conf} --stanza={pitr.stanza} archive-push %p'",
            f"archive_timeout = {pitr.archive_timeout}",
            "max_wal_senders = 3  # at least 1 (pgBackRest's check)"]


@takes_site
def restore_command(site: Site, program: str = "pgbackrest") -> str:
    """The ``restore_command`` a recovering cluster uses (``pgbackrest restore`` writes it into
    ``postgresql.auto.conf`` by itself; a standby or a hand-made recovery needs it)."""
    conf = layout(site).config
    return f"restore_command = '{program} --config={conf} --stanza={site.pgbackrest.stanza} archive-get %f \"%p\"'"


@takes_site
def write(site: Site) -> Path:
    """Write pgbackrest.conf and create the log/lock/spool dirs (0700, owned by pitr.os_user when root)."""
    pitr = site.pgbackrest
    where = layout(site)
    owner = _owner(pitr.os_user)
    for d in (where.work_dir, where.log, where.lock, where.spool):
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        _chown(d, owner)
    if pitr.repo.type == "posix":
        Path(pitr.repo.path).mkdir(parents=True, exist_ok=True, mode=0o750)
        _chown(Path(pitr.repo.path), owner)
    tmp = where.config.with_suffix(".conf.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as fh:
        fh.write(render(site))
    _chown(tmp, owner)
    tmp.replace(where.config)
    return where.config


def _owner(user: str) -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"pitr.os_user: no such user {user!r} on this host") from None
    return entry.pw_uid, entry.pw_gid


def _chown(path: Path, owner: tuple[int, int] | None) -> None:
    if owner is not None:
        os.chown(path, *owner)
