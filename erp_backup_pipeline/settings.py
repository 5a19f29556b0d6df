"""The one typed configuration, shared by the CLI and Dagster.

Loaded from a YAML file (path from ``ERP_BACKUP_CONFIG``, default ``./erp-backup.yaml``).
Strings may contain ``${VAR}`` (environment interpolation; a missing variable is an error,
``${VAR:-default}`` supplies a default). Secrets are ``SecretStr`` and may instead be read from
a ``*_file`` whose mode must deny group and other access (0600 or stricter).
Any mistake fails at load with one line naming the key and what is wrong; unknown keys are
refused, with the closest known key suggested. A config file that others may write (group or world
write bit) is refused: whoever writes it chooses what is backed up, with which key, to where.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from erp_backup_pipeline.core.retention import RetentionPolicy
from erp_backup_pipeline.core.sources import KINDS
from erp_backup_pipeline.errors import ConfigError

DEFAULT_CONFIG_PATH = "erp-backup.yaml"
CONFIG_ENV = "ERP_BACKUP_CONFIG"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def read_secret_file(path: Path, what: str) -> str:
    """Read a secret from a file that only its owner may read (mode 0600 or stricter)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read secret file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{what}: secret file {path} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0600")
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read secret file {path}: {exc.strerror}") from None


class CompressionSettings(_Model):
    codec: Literal["zstd", "gzip"] = "zstd"
    level: int = Field(3, ge=1, le=22)
    threads: int = Field(2, ge=0, le=64, description="zstd worker threads; 0 = single-threaded")

    @model_validator(mode="after")
    def _gzip_level(self) -> CompressionSettings:
        if self.codec == "gzip" and self.level > 9:
            raise ValueError("gzip level must be 1..9")
        return self


class GpgSettings(_Model):
    recipients: list[str] = Field(default_factory=list)
    homedir: Path | None = None


class EncryptionSettings(_Model):
    codec: Literal["age", "gpg"] = "age"
    recipients: list[str] = Field(default_factory=list, description="age public keys (age1...)")
    recipients_file: Path | None = None
    identity_file: Path | None = Field(None, description="age identity; needed only to verify and restore")
    gpg: GpgSettings = Field(default_factory=GpgSettings)

    def age_recipients(self) -> list[str]:
        found = list(self.recipients)
        if self.recipients_file is not None:
            try:
                lines = self.recipients_file.read_text().splitlines()
            except OSError as exc:
                raise ConfigError(f"encryption.recipients_file: cannot read {self.recipients_file}: {exc.strerror}") from None
            found += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        return found

    @model_validator(mode="after")
    def _has_recipient(self) -> EncryptionSettings:
        if self.codec == "age" and not self.recipients and self.recipients_file is None:
            raise ValueError("age encryption needs recipients or recipients_file")
        if self.codec == "gpg" and not self.gpg.recipients:
            raise ValueError("gpg encryption needs gpg.recipients")
        return self


class SigningSettings(_Model):
    """Manifest signatures (core.signing): the backing-up host signs with key_file; every host trusts the
    public_keys (and key_file's own public key)."""

    key_file: Path | None = Field(None, description="the backing-up host's signing key: OpenSSH ssh-ed25519, 0600 "
                                                    "(erp-backup keygen --signing); it signs, it cannot decrypt")
    public_keys: list[str] = Field(default_factory=list, description="ssh-ed25519 public key lines whose manifests "
                                                                     "count; a host that only verifies or restores "
                                                                     "needs just these")

    @model_validator(mode="after")
    def _has_a_key(self) -> SigningSettings:
        if self.key_file is None and not self.public_keys:
            raise ValueError("signing needs key_file (the host that backs up) or public_keys (a host that only "
                             "verifies or restores)")
        return self

    def signer(self) -> Any:
        from erp_backup_pipeline.core.signing import load_signer

        if self.key_file is None:
            raise ConfigError("signing.key_file is not set: this host trusts signing.public_keys but cannot sign a "
                              "manifest, so it cannot back up")
        return load_signer(self.key_file)

    def trusted_keys(self) -> list[Any]:
        from erp_backup_pipeline.core.signing import parse_public

        keys = [parse_public(line) for line in self.public_keys]
        if self.key_file is not None:
            keys.append(self.signer().public)
        return keys


class LocalDestinationSettings(_Model):
    type: Literal["local"]
    name: str = "local"
    path: Path
    required: bool = True


class ObjectLockSettings(_Model):
    """S3 Object Lock on every object the destination writes (its bucket must have Object Lock enabled).

    Each artifact and its manifest are locked until their capture time plus the source's
    ``retention.<source>.keep_within`` (the planner never deletes anything younger), at least ``min_days``."""

    mode: Literal["GOVERNANCE", "COMPLIANCE"]
    min_days: int | None = Field(None, ge=1, description="lock at least this many days after the capture")


class S3DestinationSettings(_Model):
    type: Literal["s3"]
    name: str = "offsite"
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "eu-central-1"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    secret_access_key_file: Path | None = None
    multipart_threshold_mb: int = Field(16, ge=5)
    part_size_mb: int = Field(16, ge=5)
    max_attempts: int = Field(5, ge=1, le=20, description="tries per S3 request (standard retries: exponential "
                                                          "backoff with jitter on 5xx, throttling and timeouts)")
    read_timeout_seconds: int = Field(60, ge=1, description="a request that answers nothing for this long is retried")
    required: bool = True
    object_lock: ObjectLockSettings | None = None

    def secret_key(self) -> str | None:
        if self.secret_access_key is not None:
            return self.secret_access_key.get_secret_value()
        if self.secret_access_key_file is not None:
            return read_secret_file(self.secret_access_key_file, f"destinations.{self.name}.secret_access_key_file")
        return None


DestinationSettings = Annotated[Union[LocalDestinationSettings, S3DestinationSettings], Field(discriminator="type")]


_ALLOW_EMPTY = "a capture without a user table (or, for a directory, without a file) passes; default: it fails the backup"


class SqliteSourceSettings(_Model):
    enabled: bool = True
    path: Path
    owner: str = "team:erp-ops"
    allow_empty: bool = Field(False, description=_ALLOW_EMPTY)


class _WithPassword(_Model):
    """A source that may need a password: inline (use ${ENV}) or from a 0600 file."""

    password: SecretStr | None = None
    password_file: Path | None = None

    def secret_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            return read_secret_file(self.password_file, f"sources.{self._section}.password_file")
        return None

    _section = "?"


class PostgresSourceSettings(_WithPassword):
    _section = "postgres"
    enabled: bool = True
    host: str = "localhost"
    port: int = Field(5432, ge=1, le=65535)
    user: str = "erp_user"
    dbname: str = "erp_steinmetz"
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    bin_dir: Path | None = Field(None, description="directory holding pg_dump/pg_restore; default: PATH")
    connect_timeout: int = Field(10, ge=1)
    exact_row_counts: bool = Field(True, description="count every table's rows in the dump's own snapshot (restore drills "
                                                     "compare against them); off: planner estimates only")
    role_passwords: bool = Field(False, description="record the roles' password hashes with the globals (needs a "
                                                    "superuser: they are in pg_authid); off: roles without passwords")
    owner: str = "team:erp-ops"
    allow_empty: bool = Field(False, description=_ALLOW_EMPTY)


class RedisSourceSettings(_WithPassword):
    _section = "redis"
    enabled: bool = True
    host: str = "localhost"
    port: int = Field(6379, ge=1, le=65535)
    username: str | None = Field(None, description="ACL user (Redis 6+); default: the default user")
    tls: bool = False
    ca_file: Path | None = None
    bin_dir: Path | None = Field(None, description="directory holding redis-check-rdb/redis-server; default: PATH")
    timeout: float = Field(30.0, gt=0)


class _DirectorySource(_Model):
    """What a directory source must hold, and whether a configured path that is a symlink is followed."""

    allow_empty: bool = Field(False, description=_ALLOW_EMPTY)
    max_shrink: float = Field(1.0, gt=0, le=1, description="fail the backup when the file count fell by this share or "
                                                           "more against the previous verified capture; 1.0: only a "
                                                           "fall to zero")
    follow_symlinks: bool = Field(False, description="a configured path that is a symlink is followed (and the manifest "
                                                     "says so); default: the backup fails naming it. Links inside the "
                                                     "tree are always stored as links")


class ConfigFilesSettings(_DirectorySource):
    """The ERP's configuration files: paths, directories or glob patterns (globs match dot files)."""

    enabled: bool = True
    paths: list[Path] = Field(min_length=1)
    excludes: list[str] = Field(default_factory=lambda: ["node_modules", "dist", ".git"],
                                description="fnmatch patterns matched against every path component")
    root: Path | None = Field(None, description="archive member names are relative to it; default: common parent")


class UploadsSettings(_DirectorySource):
    """The ERP's uploaded documents, backed up incrementally (content stored once)."""

    enabled: bool = True
    path: Path
    excludes: list[str] = Field(default_factory=list, description="fnmatch patterns matched against every path component")


class SourcesSettings(_Model):
    sqlite: SqliteSourceSettings | None = None
    postgres: PostgresSourceSettings | None = None
    redis: RedisSourceSettings | None = None
    config: ConfigFilesSettings | None = None
    uploads: UploadsSettings | None = None


class DocumentReference(_Model):
    """A query whose rows name uploaded documents (paths relative to the uploads root)."""

    source: Literal["sqlite_backup", "postgres_dump"]
    query: str = Field(description="SELECT returning one column: the document path, e.g. invoices.document_path")


class RecoverySettings(_Model):
    """Whole-ERP recovery: which cross-store consistency checks `erp-backup recover` runs after restoring."""

    document_references: list[DocumentReference] = Field(default_factory=list)


class ChecksSettings(_Model):
    size_anomaly_ratio: float = Field(0.5, gt=0, le=1, description="warn below this share of the recent median")
    restore_drill: bool = Field(True, description="restore each new backup into a scratch target right after it is written")
    drill_sample: int = Field(3, ge=0, le=100, description="older partitions per source the weekly verify_backups drills")


class RetentionSettings(_Model):
    """How long each source's backups are kept (``erp-backup prune``); the defaults are the original strategy's."""

    sqlite_backup: RetentionPolicy = Field(default_factory=lambda: KINDS["sqlite_backup"].policy)
    postgres_dump: RetentionPolicy = Field(default_factory=lambda: KINDS["postgres_dump"].policy)
    redis_snapshot: RetentionPolicy = Field(default_factory=lambda: KINDS["redis_snapshot"].policy)
    config_archive: RetentionPolicy = Field(default_factory=lambda: KINDS["config_archive"].policy)
    uploads_snapshot: RetentionPolicy = Field(default_factory=lambda: KINDS["uploads_snapshot"].policy)
    orphan_grace_hours: int = Field(48, ge=24, le=24 * 366,
                                    description="prune deletes an artifact without a manifest (a run stopped between "
                                                "upload and manifest) once its capture is this many hours old; at least "
                                                "24, so that no run still writing its manifest loses its artifact")

    def policies(self) -> dict[str, RetentionPolicy]:
        """Source name -> its policy, as ``retention.plan`` takes them."""
        return {name: value for name in type(self).model_fields
                if isinstance(value := getattr(self, name), RetentionPolicy)}


class WebhookSettings(_Model):
    """An HTTP endpoint that receives each alert as a JSON POST."""

    url: SecretStr = Field(description="the endpoint; a secret, since webhook URLs (Slack's, ...) carry a token")
    format: Literal["json", "slack"] = Field("json", description="json: every alert field plus 'text'; "
                                                                 "slack: an incoming-webhook payload {'text': ...}")
    timeout: float = Field(10.0, gt=0, description="seconds to connect and to wait for the answer")
    name: str | None = Field(None, description="shown in errors ('webhook <name>') instead of the URL; default: its host")

    def display_name(self) -> str:
        """'webhook <name>', or 'webhook <host>': what errors show, since the URL itself is a secret."""
        return f"webhook {self.name or urllib.parse.urlsplit(self.url.get_secret_value()).hostname or '?'}"

    def secret_parts(self) -> list[str]:
        """The URL, and the parts of it that carry the token (path and query, a password), for redaction."""
        url = self.url.get_secret_value()
        parts = urllib.parse.urlsplit(url)
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        found = [url]
        if len(tail.strip("/")) >= 8:  # a token-bearing path (Slack: /services/T.../B.../...), not '/' or '/hook'
            found.append(tail)
        if parts.password:
            found.append(parts.password)
        return found

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: SecretStr) -> SecretStr:
        parts = urllib.parse.urlsplit(v.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return v


class EmailSettings(_Model):
    """An SMTP server that mails each alert to the recipients."""

    host: str
    port: int = Field(25, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = Field("none", description="ssl: TLS from the start (usually port 465)")
    username: str | None = Field(None, description="log in when set")
    password: SecretStr | None = None
    password_file: Path | None = None
    ca_file: Path | None = Field(None, description="CA certificates to trust for starttls/ssl; default: the system's")
    sender: str
    recipients: list[str] = Field(min_length=1)
    timeout: float = Field(10.0, gt=0, description="seconds for each SMTP exchange")

    def secret_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            return read_secret_file(self.password_file, "alerts.email.password_file")
        return None

    @model_validator(mode="after")
    def _login(self) -> EmailSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs username")
        return self


class AlertsSettings(_Model):
    """Where failed backups and failed checks are reported (besides the Dagster UI)."""

    ui_url: str = Field("http://127.0.0.1:3000", description="Dagster UI base; run links are {ui_url}/runs/{run_id}")
    log: bool = Field(True, description="write a log line per alert")
    lookback_hours: float = Field(24.0, ge=0, description="on first start, how far back to look for failures")
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    email: EmailSettings | None = None

    @field_validator("ui_url")
    @classmethod
    def _ui_url(cls, v: str) -> str:
        parts = urllib.parse.urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")


class PitrPosixRepo(_Model):
    type: Literal["posix"]
    path: Path = Field(description="the pgBackRest repository directory (owned by os_user)")


class PitrS3Repo(_Model):
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
        if self.secret_access_key is not None:
            return self.secret_access_key.get_secret_value()
        if self.secret_access_key_file is not None:
            return read_secret_file(self.secret_access_key_file, "pitr.repo.secret_access_key_file")
        return None


PitrRepo = Annotated[Union[PitrPosixRepo, PitrS3Repo], Field(discriminator="type")]


class PitrSettings(_Model):
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
        if self.cipher_pass is not None:
            return self.cipher_pass.get_secret_value()
        if self.cipher_pass_file is not None:
            return read_secret_file(self.cipher_pass_file, "pitr.cipher_pass_file")
        return None


class MaintenanceSettings(_Model):
    """Dagster's own history: the instance's retention setting covers schedule and sensor ticks only."""

    run_history_days: int = Field(400, ge=7, description="delete Dagster runs (and their events) older than this; "
                                                          "never the newest run of any backup partition")


class MetricsSettings(_Model):
    """Optional: push every finished run's figures to a Prometheus Pushgateway (``erp-backup metrics serve``
    exports the same series for scraping)."""

    pushgateway_url: str | None = Field(None, description="e.g. http://pushgateway:9091; unset: no push")
    push_job: str = Field("erp_backup", description="the Pushgateway's job label")

    @field_validator("pushgateway_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urllib.parse.urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")


class Settings(_Model):
    staging_dir: Path = Path("var/staging")
    prefix: str = Field("erp-steinmetz", description="first part of every object key")
    state_dir: Path = Field(Path("var/state"), description="what incremental backups remember (uploads); 0700")
    compression: CompressionSettings = Field(default_factory=CompressionSettings)
    encryption: EncryptionSettings
    signing: SigningSettings
    destinations: list[DestinationSettings] = Field(min_length=1)
    sources: SourcesSettings = Field(default_factory=SourcesSettings)
    checks: ChecksSettings = Field(default_factory=ChecksSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    pitr: PitrSettings | None = None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", v):
            raise ValueError("prefix may hold letters, digits, '.', '_', '-' and '/' between parts")
        return v

    @model_validator(mode="after")
    def _unique_destinations(self) -> Settings:
        names = [d.name for d in self.destinations]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"destination names must be unique; repeated: {', '.join(dupes)}")
        return self

    def secrets(self) -> list[str]:
        """Every secret value, so logs and error text can be redacted."""
        found: list[str] = []
        for src in (self.sources.postgres, self.sources.redis):
            if src is not None:
                try:
                    pw = src.secret_password()
                except ConfigError:
                    pw = None
                if pw:
                    found.append(pw)
        if self.pitr is not None:
            for fn in (self.pitr.secret_cipher_pass,
                       self.pitr.repo.secret_key if isinstance(self.pitr.repo, PitrS3Repo) else (lambda: None)):
                try:
                    value = fn()
                except ConfigError:
                    value = None
                if value:
                    found.append(value)
        for dest in self.destinations:
            if isinstance(dest, S3DestinationSettings):
                try:
                    key = dest.secret_key()
                except ConfigError:
                    key = None
                if key:
                    found.append(key)
        found += [part for hook in self.alerts.webhooks for part in hook.secret_parts()]
        if self.alerts.email is not None:
            try:
                pw = self.alerts.email.secret_password()
            except ConfigError:
                pw = None
            if pw:
                found.append(pw)
        return found


def _interpolate(value: Any, where: str) -> Any:
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if os.environ.get(name) or (name in os.environ and default is None):
                return os.environ[name]
            if default is not None:  # ${VAR:-default}: unset or empty, as in the shell
                return default
            raise ConfigError(f"config {where}: environment variable {name} is not set")
        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Walk the model along ``loc`` and return the field names at its end (for suggestions)."""
    current: Any = model
    tagged = {"local": LocalDestinationSettings, "s3": S3DestinationSettings}
    for part in loc[:-1]:
        if part in tagged:
            current = tagged[part]
        elif isinstance(part, int) or current is None:
            continue
        elif part in (fields := getattr(current, "model_fields", {})):
            ann = fields[part].annotation
            args = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
            current = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else (args[0] if args else None)
    return list(getattr(current, "model_fields", {}).keys())


MISSING_HINTS = {"signing": ": every manifest is signed; make a key with `erp-backup keygen --signing -o FILE` and "
                            "set signing.key_file (a host that only restores: signing.public_keys)"}


def _format_validation_error(exc: ValidationError, source: str) -> str:
    # a misspelt required key is both unknown and missing: the unknown one, with its suggestion, says why
    err = next((e for e in exc.errors() if e["type"] == "extra_forbidden"), exc.errors()[0])
    loc = tuple(err["loc"])
    shown = ".".join(str(p) for p in loc if p not in ("local", "s3")) or "(top level)"
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _known_fields(Settings, loc), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        msg = f"unknown key{hint}"
    elif err["type"] == "missing":
        msg = "required key is missing" + MISSING_HINTS.get(shown, "")
    else:
        msg = err["msg"].removeprefix("Value error, ")
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"config {source}: {shown}: {msg}{more}"


def parse_settings(data: Any, source: str = "<dict>", base_dir: Path | None = None) -> Settings:
    """Validate a mapping (already read from YAML) into Settings; relative paths resolve against base_dir."""
    if not isinstance(data, dict):
        raise ConfigError(f"config {source}: the top level must be a mapping")
    data = _interpolate(data, "")
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    return _resolve_paths(settings, base_dir or Path.cwd())


def _resolve_paths(model: BaseModel, base: Path) -> Any:
    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, Path) and not value.is_absolute():
            updates[name] = (base / value)
        elif isinstance(value, BaseModel):
            updates[name] = _resolve_paths(value, base)
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            updates[name] = [_resolve_paths(v, base) for v in value]
    return model.model_copy(update=updates) if updates else model


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    return Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Load the configuration file; relative paths in it resolve against the file's directory."""
    p = config_path(path)
    try:
        st = p.stat()
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ConfigError(f"config file {p} has mode {stat.S_IMODE(st.st_mode):04o}: other users could write it and "
                              "choose the sources, keys and destinations of every backup; chmod go-w it (0600 or 0640)")
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found (set {CONFIG_ENV} or create it; see "
                          "docs/reference/configuration.md)") from None
    except OSError as exc:
        raise ConfigError(f"config file {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config {p}:{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_settings(data, str(p), p.resolve().parent)
