"""Configuration: typed, strict, one clear line per mistake, secrets from env or 0600 files."""

from pathlib import Path

import pytest

from erp_backup_pipeline.errors import ConfigError
from erp_backup_pipeline.settings import load_settings, parse_settings

PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDXYJ6KsjWbF/S1AgBoVYpBudMBcSuZy3xgDcW+jH19i erp-backup"
BASE = {
    "encryption": {"recipients": ["age1qqqq"]},
    "signing": {"public_keys": [PUBLIC]},
    "destinations": [{"type": "local", "path": "backups"}],
}


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "erp-backup.yaml"
    p.write_text(text)
    return p


def test_minimal_config_resolves_relative_paths_against_the_file(tmp_path: Path) -> None:
    p = _write(tmp_path, "encryption: {recipients: [age1x]}\ndestinations: [{type: local, path: backups}]\n"
                         f"signing: {{public_keys: ['{PUBLIC}']}}\nsources: {{sqlite: {{path: data/erp.sqlite3}}}}\n")
    s = load_settings(p)
    assert s.destinations[0].path == tmp_path / "backups"
    assert s.sources.sqlite is not None and s.sources.sqlite.path == tmp_path / "data/erp.sqlite3"
    assert s.compression.codec == "zstd" and s.compression.level == 3


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _write(tmp_path, "encryption: {recipients: [age1x]}\ndestinations: [{type: local, path: b}]\n"
                         f"signing: {{public_keys: ['{PUBLIC}']}}\n")
    monkeypatch.setenv("ERP_BACKUP_CONFIG", str(p))
    assert load_settings().prefix == "erp-steinmetz"


@pytest.mark.parametrize("data, expected", [
    ({**BASE, "compresion": {}}, "compresion: unknown key (did you mean 'compression'?)"),
    ({**BASE, "sources": {"postgres": {"passwrd": "x"}}}, "sources.postgres.passwrd: unknown key (did you mean 'password'?)"),
    ({**BASE, "destinations": [{"type": "s3", "bucket": "b", "endpoint": "x"}]},
     "destinations.0.endpoint: unknown key (did you mean 'endpoint_url'?)"),
    ({**BASE, "compression": {"level": "high"}}, "compression.level: Input should be a valid integer"),
    ({**BASE, "compression": {"codec": "lz4"}}, "compression.codec: Input should be 'zstd' or 'gzip'"),
    ({**BASE, "destinations": []}, "destinations: List should have at least 1 item"),
    ({"destinations": [{"type": "local", "path": "b"}], "signing": BASE["signing"]}, "encryption: required key is missing"),
    ({**{k: v for k, v in BASE.items() if k != "signing"}},
     "signing: required key is missing: every manifest is signed; make a key with `erp-backup keygen --signing"),
    ({**BASE, "signing": {}}, "signing needs key_file (the host that backs up) or public_keys"),
    ({**BASE, "destinations": [{"type": "ftp", "path": "b"}]}, "destinations.0"),
    ({**BASE, "encryption": {"codec": "age"}}, "age encryption needs recipients"),
])
def test_bad_config_is_one_line_naming_the_key(data: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(data, "erp-backup.yaml")
    message = str(err.value)
    assert expected in message
    assert "\n" not in message and message.startswith("config erp-backup.yaml: ")


def test_env_interpolation_and_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {**BASE, "sources": {"postgres": {"password": "${ERP_DB_PASSWORD}", "host": "${ERP_DB_HOST:-db.local}"}}}
    monkeypatch.setenv("ERP_DB_PASSWORD", "s3cr3t-value")
    s = parse_settings(data)
    assert s.sources.postgres is not None
    assert s.sources.postgres.secret_password() == "s3cr3t-value"
    assert s.sources.postgres.host == "db.local"
    monkeypatch.setenv("ERP_DB_HOST", "")  # empty counts as unset for ${VAR:-default}, as in the shell
    assert parse_settings(data).sources.postgres.host == "db.local"
    assert "s3cr3t-value" not in repr(s) and "s3cr3t-value" not in str(s.model_dump())
    monkeypatch.delenv("ERP_DB_PASSWORD")
    with pytest.raises(ConfigError, match=r"sources.postgres.password: environment variable ERP_DB_PASSWORD is not set"):
        parse_settings(data)


def test_secret_file_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "pgpass"
    secret.write_text("from-a-file\n")
    secret.chmod(0o644)
    s = parse_settings({**BASE, "sources": {"postgres": {"password_file": str(secret)}}})
    assert s.sources.postgres is not None
    with pytest.raises(ConfigError, match="has mode 0644; it must be 0600"):
        s.sources.postgres.secret_password()
    secret.chmod(0o600)
    assert s.sources.postgres.secret_password() == "from-a-file"


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="line 3: not valid YAML"):
        load_settings(_write(tmp_path, "a: 1\nb: [unclosed\n"))


def test_the_reference_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/reference/configuration.md's complete example parses: every key in it exists and every value has the
    right type."""
    import re

    import yaml

    from erp_backup_pipeline_tests.docs import docs_text

    reference = docs_text("reference", "configuration.md")
    block = re.search(r"A complete example:\n\n```yaml\n(.*?)```", reference, re.S)
    assert block is not None
    for var in ("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "ERP_DB_PASSWORD", "ERP_REDIS_PASSWORD",
                "ERP_SLACK_WEBHOOK", "ERP_SMTP_PASSWORD", "PGBACKREST_CIPHER_PASS"):
        monkeypatch.setenv(var, "https://hooks.example/services/T0/B0/x" if var == "ERP_SLACK_WEBHOOK" else "x" * 12)
    settings = parse_settings(yaml.safe_load(block.group(1)), "docs/reference/configuration.md")
    assert settings.alerts.email is not None and settings.alerts.webhooks[0].format == "slack"
    assert settings.sources.postgres is not None and settings.checks.drill_sample == 3
    assert settings.pitr is not None and settings.pitr.repo.type == "posix" and settings.pitr.retention_full_days == 7
