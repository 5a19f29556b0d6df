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
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

from erp_backup_pipeline.core.alerts import AlertsSettings, EmailSettings, WebhookSettings
from erp_backup_pipeline.core.codecs import CompressionSettings, EncryptionSettings
from erp_backup_pipeline.core.config import Model, http_url, read_secret_file
from erp_backup_pipeline.core.destinations.local import LocalDestinationSettings
from erp_backup_pipeline.core.destinations.s3 import S3DestinationSettings
from erp_backup_pipeline.core.partitions import PartitionsSettings
from erp_backup_pipeline.core.pitr.config import PitrSettings
from erp_backup_pipeline.core.retention import RetentionPolicy
from erp_backup_pipeline.core.signing import SigningSettings
from erp_backup_pipeline.core.sources import KINDS
from erp_backup_pipeline.errors import ConfigError

# the plug-ins' own models, for those who import them from here
__all__ = ["AlertsSettings", "EmailSettings", "S3DestinationSettings", "Settings", "WebhookSettings", "config_path",
           "load_settings", "parse_settings", "read_secret_file"]

DEFAULT_CONFIG_PATH = "erp-backup.yaml"
CONFIG_ENV = "ERP_BACKUP_CONFIG"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


DestinationSettings = Annotated[Union[LocalDestinationSettings, S3DestinationSettings], Field(discriminator="type")]


# one optional section per registered source kind (``sources.<key>``), from the registry: a new kind adds none here
SourcesSettings = create_model("SourcesSettings", __base__=Model,
                               **{k.key: (k.settings | None, None) for k in KINDS.values()})  # type: ignore[call-overload]

# the stores whose restored copies answer SQL (the document references' queries)
DATABASES = tuple(name for name, kind in KINDS.items() if kind.answers_sql)


class DocumentReference(Model):
    """A query whose rows name uploaded documents (paths relative to the uploads root)."""

    source: str = Field(description="the database store the query runs on: " + " or ".join(DATABASES))
    query: str = Field(description="SELECT returning one column: the document path, e.g. invoices.document_path")

    @field_validator("source")
    @classmethod
    def _database(cls, v: str) -> str:
        if v not in DATABASES:
            raise ValueError(f"Input should be {' or '.join(repr(d) for d in DATABASES)}")
        return v


class RecoverySettings(Model):
    """Whole-ERP recovery: which cross-store consistency checks `erp-backup recover` runs after restoring."""

    document_references: list[DocumentReference] = Field(default_factory=list)


class ChecksSettings(Model):
    size_anomaly_ratio: float = Field(0.5, gt=0, le=1, description="warn below this share of the recent median")
    restore_drill: bool = Field(True, description="restore each new backup into a scratch target right after it is written")
    drill_sample: int = Field(3, ge=0, le=100, description="older partitions per source the weekly verify_backups drills")


class _Retention(Model):
    """How long each source's backups are kept (``erp-backup prune``); the defaults are the original strategy's."""

    orphan_grace_hours: int = Field(48, ge=24, le=24 * 366,
                                    description="prune deletes an artifact without a manifest (a run stopped between "
                                                "upload and manifest) once its capture is this many hours old; at least "
                                                "24, so that no run still writing its manifest loses its artifact")

    def policies(self) -> dict[str, RetentionPolicy]:
        """Source name -> its policy, as ``retention.plan`` takes them."""
        return {name: value for name in type(self).model_fields
                if isinstance(value := getattr(self, name), RetentionPolicy)}


# one policy per registered source kind (``retention.<name>``), each defaulting to its kind's
RetentionSettings = create_model(
    "RetentionSettings", __base__=_Retention,
    **{name: (RetentionPolicy, Field(default_factory=lambda kind=kind: kind.policy))  # type: ignore[misc]
       for name, kind in KINDS.items()})  # type: ignore[call-overload]


class MaintenanceSettings(Model):
    """Dagster's own history: the instance's retention setting covers schedule and sensor ticks only."""

    run_history_days: int = Field(400, ge=7, description="delete Dagster runs (and their events) older than this; "
                                                          "never the newest run of any backup partition")


class MetricsSettings(Model):
    """Optional: push every finished run's figures to a Prometheus Pushgateway (``erp-backup metrics serve``
    exports the same series for scraping)."""

    pushgateway_url: str | None = Field(None, description="e.g. http://pushgateway:9091; unset: no push")
    push_job: str = Field("erp_backup", description="the Pushgateway's job label")

    _url = field_validator("pushgateway_url")(lambda v: v if v is None else http_url(v))


class Settings(Model):
    staging_dir: Path = Path("var/staging")
    prefix: str = Field("erp-steinmetz", description="first part of every object key")
    state_dir: Path = Field(Path("var/state"), description="what incremental backups remember (uploads); 0700")
    compression: CompressionSettings = Field(default_factory=CompressionSettings)
    encryption: EncryptionSettings
    signing: SigningSettings
    destinations: list[DestinationSettings] = Field(min_length=1)
    sources: SourcesSettings = Field(default_factory=SourcesSettings)  # type: ignore[valid-type]
    checks: ChecksSettings = Field(default_factory=ChecksSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)  # type: ignore[valid-type]
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    partitions: PartitionsSettings = Field(default_factory=PartitionsSettings)
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
        """Every secret value in the configuration (each model's ``secret_values``), so logs and error text can be
        redacted."""
        found: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, Model):
                found.extend(value.secret_values())
                for name in type(value).model_fields:
                    walk(getattr(value, name))
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        walk(self)
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
