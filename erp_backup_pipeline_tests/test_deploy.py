"""The deployment files (deploy/docker, deploy/systemd, deploy/helm), validated as far as this machine allows.

No Docker daemon, compose plugin, Helm or Kubernetes cluster here: compose and the Dockerfile are checked
structurally, the systemd units with ``systemd-analyze verify`` (when present), the Prometheus config with
``promtool`` (when present), Debian package names with ``apt-cache`` (when present), the Helm values against
the chart's documented key set (copied below), and the sample config with the project's own parser.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from erp_backup_pipeline.settings import S3DestinationSettings, parse_settings
from erp_backup_pipeline_tests.docs import docs_text

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"
SYSTEMD = DEPLOY / "systemd"
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
SAMPLE_CONFIG = DOCKER / "erp-backup.yaml"
UNITS = ["erp-backup-code-server.service", "erp-backup-webserver.service", "erp-backup-daemon.service",
         "erp-backup-metrics.service"]
MODULE = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]

# a compose variable reference; `$$` is compose's escape for a literal `$` (expanded by the container's shell)
_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE", re.I)


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _env_example() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=VALUE: {line!r}"
            found[key.strip()] = value.strip()
    return found


def _compose_vars(text: str) -> set[str]:
    return {m.group(1) for m in _VAR.finditer(text)}


def _short_mount(spec: str) -> tuple[str, str, str]:
    """'SRC:DST[:MODE]' -> (src, dst, mode); SRC may hold ${VAR:?message} (which may contain ':')."""
    m = _VAR.match(spec)
    if m:  # a variable as the source
        rest = spec[m.end():].lstrip(":")
        dst, _, mode = rest.partition(":")
        return m.group(0), dst, mode
    parts = spec.split(":")
    if len(parts) == 1:
        return "", parts[0], ""
    return parts[0], parts[1], parts[2] if len(parts) > 2 else ""


# ---------------------------------------------------------------------------------------------- YAML

@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in [
    *DOCKER.glob("*.yml"), *DOCKER.glob("*.yaml"), HELM_VALUES]))
def test_every_deploy_yaml_parses_to_a_mapping(path: str) -> None:
    data = yaml.safe_load((ROOT / path).read_text())
    assert isinstance(data, dict) and data, f"{path}: empty or not a mapping"


def test_no_private_key_or_known_secret_in_any_deploy_file() -> None:
    for path in [*DOCKER.iterdir(), *SYSTEMD.iterdir(), HELM_VALUES]:
        if path.name == ".env.example":
            continue
        text = path.read_text()
        assert "AGE-SECRET-KEY" not in text, f"{path}: holds an age private key"
        assert "BEGIN PGP PRIVATE" not in text, f"{path}: holds a GPG private key"
        for key, value in _env_example().items():
            if _SECRET_NAME.search(key):
                assert value not in text, f"{path}: holds {key}'s example value literally"


# ------------------------------------------------------------------------------------------- compose

EXPECTED_SERVICES = {"dagster-postgres", "minio", "minio-init", "code-server", "webserver", "webserver-readonly",
                     "ui-proxy", "daemon", "metrics", "prometheus"}
ONE_SHOT = {"minio-init"}


def test_compose_has_the_production_services_each_with_an_image_or_build() -> None:
    services = _compose()["services"]
    assert set(services) == EXPECTED_SERVICES
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name}: neither image nor build"
    own = [n for n, s in services.items() if s.get("build")]
    assert set(own) == {"code-server", "webserver", "webserver-readonly", "daemon", "metrics"}
    for name in own:  # one image for all of them, built from our Dockerfile
        build = services[name]["build"]
        assert (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert services[name]["image"] == services["code-server"]["image"]


def test_compose_every_long_running_service_has_a_healthcheck() -> None:
    for name, svc in _compose()["services"].items():
        if name in ONE_SHOT:
            assert svc.get("restart") == "no", f"{name}: a one-shot job must not restart"
            continue
        test = (svc.get("healthcheck") or {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck test"


def test_compose_depends_on_names_existing_services_with_conditions_that_can_be_met() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must use the long form with conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name}: depends_on unknown service {dep}"
            cond = spec.get("condition")
            assert cond in ("service_started", "service_healthy", "service_completed_successfully"), (name, dep)
            if cond == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name}: waits for {dep} healthy, which has no healthcheck"
            if cond == "service_completed_successfully":
                assert dep in ONE_SHOT, f"{name}: waits for {dep} to complete, but it runs forever"
    # no cycle: repeatedly remove services whose dependencies are gone
    pending = {n: set(s.get("depends_on", {})) for n, s in services.items()}
    while pending:
        ready = [n for n, deps in pending.items() if not deps & set(pending)]
        assert ready, f"depends_on cycle among {sorted(pending)}"
        for n in ready:
            del pending[n]
    # the Dagster processes start once storage is healthy and the code server answers
    for name in ("webserver", "daemon"):
        deps = services[name]["depends_on"]
        assert deps["dagster-postgres"]["condition"] == "service_healthy"
        assert deps["code-server"]["condition"] == "service_healthy"
    assert services["code-server"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_compose_mounts_are_repo_files_documented_variables_or_declared_volumes() -> None:
    compose = _compose()
    declared = set(compose.get("volumes") or {})
    env_keys = set(_env_example())
    used: set[str] = set()
    for name, svc in compose["services"].items():
        for spec in svc.get("volumes", []):
            assert isinstance(spec, str), f"{name}: use the short 'src:dst[:mode]' form"
            src, dst, mode = _short_mount(spec)
            assert dst.startswith("/"), f"{name}: {spec}"
            if src.startswith("${"):
                m = _VAR.match(src)
                assert m and m.group(1) in env_keys, f"{name}: {src} is not in .env.example"
                assert m.group(2) == ":?", f"{name}: {src} must fail when unset (${{VAR:?message}})"
                assert mode == "ro", f"{name}: operator data {src} must be mounted read-only"
            elif src.startswith((".", "/")):
                host = (COMPOSE_FILE.parent / src).resolve()
                assert host.exists(), f"{name}: mounted host path {src} does not exist in the repository"
                assert host.is_relative_to(ROOT), f"{name}: {src} is outside the repository"
                assert mode == "ro", f"{name}: repository file {src} must be mounted read-only"
            else:
                assert src in declared, f"{name}: volume {src} is not declared under volumes:"
                used.add(src)
            if dst.startswith("/etc/"):
                assert mode == "ro", f"{name}: configuration and keys ({dst}) must be read-only"
    assert declared == used, f"declared but unused volumes: {sorted(declared - used)}"


def test_compose_environment_holds_no_secret_literal() -> None:
    for name, svc in _compose()["services"].items():
        env = svc.get("environment") or {}
        assert isinstance(env, dict), f"{name}: environment must be a mapping"
        for key, value in env.items():
            if _SECRET_NAME.search(key):
                assert isinstance(value, str) and re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", value), (
                    f"{name}: {key} must come from .env as ${{VAR}}, not {value!r}")


def test_env_example_covers_every_variable_and_every_key_is_used() -> None:
    env = _env_example()
    compose_text = COMPOSE_FILE.read_text()
    needed = _compose_vars(compose_text)
    assert needed, "no ${VAR} found: the parser is broken"
    assert needed <= set(env), f"missing from .env.example: {sorted(needed - set(env))}"
    used = needed | _compose_vars(SAMPLE_CONFIG.read_text())
    assert set(env) <= used, f".env.example keys nothing uses: {sorted(set(env) - used)}"
    for key, value in env.items():
        if _SECRET_NAME.search(key):
            assert "change-me" in value, f".env.example: {key} must be a placeholder, not a real secret"


def test_the_code_server_gets_every_variable_the_sample_config_needs() -> None:
    env = _compose()["services"]["code-server"]["environment"]
    for var in _compose_vars(SAMPLE_CONFIG.read_text()):
        assert var in env, f"erp-backup.yaml uses ${{{var}}}, which the code-server service does not receive"


def test_dagster_processes_get_the_instance_and_workspace_they_read() -> None:
    services = _compose()["services"]
    instance = (DEPLOY / "production" / "dagster.yaml").read_text()
    workspace = yaml.safe_load((DEPLOY / "production" / "workspace.yaml").read_text())
    instance_vars = set(re.findall(r"env:\s*(DAGSTER_[A-Z_]+)", instance))
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD"} <= instance_vars
    grpc = workspace["load_from"][0]["grpc_server"]
    for name in ("code-server", "webserver", "daemon", "metrics"):
        env = services[name]["environment"]
        assert instance_vars <= set(env), f"{name}: missing {sorted(instance_vars - set(env))}"
        assert env["DAGSTER_PG_HOST"] == "dagster-postgres"
        mounts = [_short_mount(v)[1] for v in services[name]["volumes"]]
        assert f"{env['DAGSTER_HOME']}/dagster.yaml" in mounts, f"{name}: no dagster.yaml in DAGSTER_HOME"
    for name in ("webserver", "daemon"):
        env = services[name]["environment"]
        host = env[grpc["host"]["env"]] if isinstance(grpc["host"], dict) else grpc["host"]
        port = env[grpc["port"]["env"]] if isinstance(grpc["port"], dict) else grpc["port"]
        assert host == "code-server" and str(port) == "4000", f"{name}: the workspace would not reach the code server"
        assert "/opt/dagster/dagster_home/workspace.yaml" in services[name]["command"]


def test_prometheus_scrapes_the_metrics_service_and_loads_the_project_rules() -> None:
    services = _compose()["services"]
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    target = prom["scrape_configs"][0]["static_configs"][0]["targets"][0]
    cmd = services["metrics"]["command"]
    assert cmd[:3] == ["erp-backup", "metrics", "serve"]
    assert target == f"metrics:{cmd[cmd.index('--port') + 1]}"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    mounts = {_short_mount(v)[1]: _short_mount(v)[0] for v in services["prometheus"]["volumes"]}
    assert prom["rule_files"] == ["alert-rules.yml"]
    assert (COMPOSE_FILE.parent / mounts["/etc/prometheus/alert-rules.yml"]).resolve() == \
        DEPLOY / "prometheus" / "alert-rules.yml"


def test_promtool_accepts_the_compose_prometheus_config_with_the_rules(tmp_path: Path) -> None:
    shutil.copy(DOCKER / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOY / "prometheus" / "alert-rules.yml", tmp_path / "alert-rules.yml")
    out = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# `docker compose config` (the schema check) cannot run here: the docker CLI has no compose plugin and there
# is no daemon; the structure checks above stand in for it (docs/guide/deployment.md).


# ------------------------------------------------------------------------------------------ Dockerfile

def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        joined.append(buf + line)
        buf = ""
    assert not buf, "Dockerfile ends inside a continuation"
    return [(ins.upper(), rest.strip()) for ins, _, rest in (line.partition(" ") for line in joined)]


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not exec (JSON) form: {args}"
    return value


def test_dockerfile_base_user_healthcheck_and_command() -> None:
    ins = _dockerfile()
    names = [i for i, _ in ins]
    assert names[0] == "FROM" and ins[0][1].startswith("python:3.11-slim")
    assert names.count("FROM") == 1
    users = [a for i, a in ins if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    last_user = max(n for n, (i, _) in enumerate(ins) if i == "USER")
    assert all(i != "RUN" for i, _ in ins[last_user:]), "RUN after USER: setup must happen as root before it"
    cmd = _exec_form(next(a for i, a in ins if i == "CMD"))
    assert cmd == ["dagster", "api", "grpc", "-m", MODULE, "-h", "0.0.0.0", "-p", "4000"]
    health = next(a for i, a in ins if i == "HEALTHCHECK")
    probe = _exec_form(health[health.index("CMD") + 3:].strip())
    assert probe[:3] == ["dagster", "api", "grpc-health-check"] and probe[probe.index("-p") + 1] == "4000"
    assert ("EXPOSE", "4000") in ins


REQUIRED_PACKAGES = {"postgresql-client", "redis-tools", "age", "zstd", "gnupg", "sqlite3", "pgbackrest"}


def _apt_packages() -> set[str]:
    run = " ".join(a for i, a in _dockerfile() if i == "RUN" and "apt-get install" in a)
    words = run.split("apt-get install", 1)[1].split("&&")[0].split()
    return {w for w in words if not w.startswith("-")}


def test_dockerfile_installs_the_runtime_tools_and_the_pinned_project() -> None:
    assert REQUIRED_PACKAGES <= _apt_packages()
    ins = _dockerfile()
    for i, args in ins:
        if i == "COPY":
            for src in args.split()[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    runs = " && ".join(a for i, a in ins if i == "RUN")
    assert "pip install ." in runs and "pip check" in runs
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {"dagster==1.13.27", "dagster-webserver==1.13.27", "dagster-postgres==0.29.27"} <= set(deps)


def test_dockerfile_packages_exist_in_debian() -> None:
    """This machine is Debian 12 (bookworm), the image's base: every package name must have a candidate."""
    assert "bookworm" in Path("/etc/os-release").read_text(), "the tests run on Debian 12, the image's base"
    for pkg in sorted(_apt_packages()):
        out = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True, timeout=60).stdout
        assert "Candidate:" in out and "Candidate: (none)" not in out, f"{pkg}: no installable candidate"


# ------------------------------------------------------------------------------------------- systemd

def _unit(name: str) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in (SYSTEMD / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{name}: bad section header {line!r}"
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        assert current is not None and "=" in line, f"{name}: {line!r} outside a section or not KEY=VALUE"
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def _values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


@pytest.mark.parametrize("name", UNITS)
def test_systemd_unit_sections_and_hardening(name: str) -> None:
    unit = _unit(name)
    assert set(unit) == {"Unit", "Service", "Install"}
    one = {k: _values(unit, "Service", k) for k in ("User", "EnvironmentFile", "ProtectSystem", "NoNewPrivileges",
                                                     "PrivateTmp", "Restart", "ExecStart")}
    assert one["User"] == ["erp-backup"]
    assert one["EnvironmentFile"] == ["/etc/erp-backup/env"]
    assert one["ProtectSystem"] == ["strict"] and one["NoNewPrivileges"] == ["yes"] and one["PrivateTmp"] == ["yes"]
    assert one["Restart"] == ["on-failure"]
    assert len(one["ExecStart"]) == 1 and one["ExecStart"][0].startswith("/opt/erp-backup/venv/bin/")
    binary = Path(one["ExecStart"][0].split()[0]).name
    assert (Path(sys.executable).parent / binary).exists(), f"{binary}: not a program this project installs"
    env = dict(v.split("=", 1) for v in _values(unit, "Service", "Environment"))
    writable = " ".join(_values(unit, "Service", "ReadWritePaths")).split()
    assert env["DAGSTER_HOME"] in writable, f"{name}: DAGSTER_HOME is not writable under ProtectSystem=strict"
    assert _values(unit, "Install", "WantedBy") == ["multi-user.target"]


def test_systemd_code_server_can_write_staging_state_and_the_local_destination() -> None:
    unit = _unit("erp-backup-code-server.service")
    writable = set(" ".join(_values(unit, "Service", "ReadWritePaths")).split())
    config = yaml.safe_load(docs_text("reference", "configuration.md").split("A complete example:", 1)[1]
                            .split("```yaml", 1)[1].split("```", 1)[0])
    local = next(d["path"] for d in config["destinations"] if d["type"] == "local")
    assert {config["staging_dir"], config["state_dir"], local} <= writable
    cmd = _values(unit, "Service", "ExecStart")[0].split()
    assert cmd[1:] == ["api", "grpc", "-m", MODULE, "-h", "127.0.0.1", "-p", "4000"]
    env = dict(v.split("=", 1) for v in _values(unit, "Service", "Environment"))
    assert env["DAGSTER_GRPC_HOST"] == "127.0.0.1" and env["DAGSTER_GRPC_PORT"] == "4000"


@pytest.mark.parametrize("name", ["erp-backup-webserver.service", "erp-backup-daemon.service"])
def test_systemd_dagster_processes_start_after_and_require_the_code_server(name: str) -> None:
    unit = _unit(name)
    after = " ".join(_values(unit, "Unit", "After")).split()
    requires = " ".join(_values(unit, "Unit", "Requires")).split()
    assert "erp-backup-code-server.service" in after and "erp-backup-code-server.service" in requires
    assert "-w /etc/erp-backup/workspace.yaml" in _values(unit, "Service", "ExecStart")[0]


def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` with the venv path pointed at this checkout's (it checks ExecStart exists).

    It exits 0 on an unknown key or a bad value (it only warns), so any output fails the test too."""
    for name in UNITS:
        text = (SYSTEMD / name).read_text().replace("/opt/erp-backup/venv/bin", str(Path(sys.executable).parent))
        (tmp_path / name).write_text(text)
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(tmp_path / n) for n in UNITS)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------- Helm

# Key paths of Dagster's chart (dagster/dagster) that these values may set, read from the chart's
# helm/dagster/values.schema.json at dagster-io/dagster commit bdb8547fab497826eeec292bc160b549a0a329ef and
# cross-checked with helm/dagster/schema/ (pydantic: daemon.py, run_launcher.py, postgresql.py,
# user_deployments.py). `[]` is a list item. Only the keys we use (and their parents) are listed: a key
# missing here is one that was not verified, not necessarily one the chart lacks.
HELM_ALLOWED = {
    "global", "global.postgresqlSecretName",
    "postgresql", "postgresql.enabled", "postgresql.postgresqlHost", "postgresql.postgresqlUsername",
    "postgresql.postgresqlDatabase", "postgresql.postgresqlScheme", "postgresql.service", "postgresql.service.port",
    "generatePostgresqlPasswordSecret",
    "dagster-user-deployments", "dagster-user-deployments.enabled", "dagster-user-deployments.enableSubchart",
    "dagster-user-deployments.deployments", "dagster-user-deployments.deployments[]",
    *(f"dagster-user-deployments.deployments[].{k}" for k in (
        "name", "image", "image.repository", "image.tag", "image.pullPolicy", "dagsterApiGrpcArgs", "port",
        "includeConfigInLaunchedRuns", "includeConfigInLaunchedRuns.enabled", "env", "envSecrets", "volumes",
        "volumeMounts", "podSecurityContext", "securityContext", "resources")),
    "runLauncher", "runLauncher.type", "runLauncher.config", "runLauncher.config.k8sRunLauncher",
    *(f"runLauncher.config.k8sRunLauncher.{k}" for k in ("loadInclusterConfig", "envSecrets", "failPodOnRunFailure")),
    "dagsterDaemon", "dagsterDaemon.enabled", "dagsterDaemon.runCoordinator", "dagsterDaemon.runCoordinator.enabled",
    "dagsterDaemon.runCoordinator.type", "dagsterDaemon.runCoordinator.config",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.maxConcurrentRuns",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[]",
    *(f"dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[].{k}"
      for k in ("key", "value", "value.applyLimitPerUniqueValue", "limit")),
    # helm/dagster/schema/schema/charts/dagster/subschema/concurrency.py @ 0f2d9d8 (Concurrency, ConcurrencyPools,
    # ConcurrencyRuns, TagConcurrencyLimit; all extra="forbid") and templates/helpers/instance/_concurrency.tpl
    "concurrency", "concurrency.enabled", "concurrency.pools", "concurrency.pools.granularity",
    "concurrency.pools.defaultLimit", "concurrency.runs", "concurrency.runs.maxConcurrentRuns",
    "concurrency.runs.tagConcurrencyLimits", "concurrency.runs.tagConcurrencyLimits[]",
    *(f"concurrency.runs.tagConcurrencyLimits[].{k}" for k in ("key", "value", "value.applyLimitPerUniqueValue",
                                                               "limit")),
    "dagsterWebserver", "dagsterWebserver.replicaCount", "dagsterWebserver.service", "dagsterWebserver.service.type",
    "dagsterWebserver.service.port",
    # helm/dagster/schema/schema/charts/dagster/subschema/webserver.py @ 0070107 (Webserver.enableReadOnly: bool);
    # templates/helpers/_helpers.tpl: the second webserver gets --read-only and component dagster-webserver-read-only
    "dagsterWebserver.enableReadOnly",
    "telemetry", "telemetry.enabled",
    "retention", "retention.enabled", "retention.schedule", "retention.schedule.purgeAfterDays", "retention.sensor",
    "retention.sensor.purgeAfterDays",
    *(f"retention.sensor.purgeAfterDays.{k}" for k in ("skipped", "success", "failure", "started")),
}
# Kubernetes objects passed through to pod specs (the schema refers to Kubernetes' own definitions):
# their insides are not chart keys.
HELM_OPAQUE = {f"dagster-user-deployments.deployments[].{k}" for k in (
    "env", "envSecrets", "volumes", "volumeMounts", "podSecurityContext", "securityContext", "resources",
    "dagsterApiGrpcArgs")} | {"runLauncher.config.k8sRunLauncher.envSecrets"}


def _helm_unknown_keys(values: Any, prefix: str = "") -> list[str]:
    unknown: list[str] = []
    if isinstance(values, dict):
        for key, value in values.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if path not in HELM_ALLOWED:
                unknown.append(path)
            elif path not in HELM_OPAQUE:
                unknown += _helm_unknown_keys(value, path)
    elif isinstance(values, list):
        for item in values:
            if isinstance(item, (dict, list)):
                unknown += _helm_unknown_keys(item, f"{prefix}[]")
    return unknown


def test_the_pools_the_operator_limits_after_a_helm_install_are_the_code_locations_pools() -> None:
    from erp_backup_pipeline.orchestration.pools import pools

    out = subprocess.run([sys.executable, "-m", "erp_backup_pipeline.orchestration.pools", "--list"],
                         capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == pools() and "erp_backup/postgres_dump" in pools()


def test_the_pool_step_of_make_run_limits_every_pool_in_one_process(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """make run's step: every pool of the code location gets a limit of one run, in the instance of $DAGSTER_HOME
    (the shipped top-level dagster.yaml), one process for all of them, one line saying what it did."""
    import dagster as dg

    from erp_backup_pipeline.orchestration.pools import pools

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "erp_backup_pipeline.orchestration.pools"], capture_output=True,
                         text=True, check=True, timeout=120, env=env)
    assert out.stdout.strip().startswith(f"concurrency pools: {len(pools())}, each 1 run at a time")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        assert {k: storage.get_concurrency_info(k).slot_count for k in storage.get_concurrency_keys()} == \
            dict.fromkeys(pools(), 1)


def test_helm_values_set_only_keys_the_chart_documents() -> None:
    values = yaml.safe_load(HELM_VALUES.read_text())
    assert _helm_unknown_keys(values) == []


def test_helm_key_check_rejects_a_misspelt_or_misplaced_key() -> None:
    values = yaml.safe_load(HELM_VALUES.read_text())
    values["telemetry"]["enable"] = False
    values["concurrency"]["runs"]["tagConcurrencyLimits"][0]["limits"] = 1
    values["concurrency"]["pool"] = {"defaultLimit": 1}
    values["runLauncher"]["config"]["k8sRunLauncher"]["image"] = {"repository": "x"}  # unverified: not in the list
    assert sorted(_helm_unknown_keys(values)) == [
        "concurrency.pool", "concurrency.runs.tagConcurrencyLimits[].limits",
        "runLauncher.config.k8sRunLauncher.image", "telemetry.enable"]


def test_helm_values_describe_the_production_topology(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SAMPLE_ENV.items():
        monkeypatch.setenv(key, value)
    v = yaml.safe_load(HELM_VALUES.read_text())
    assert v["runLauncher"]["type"] == "K8sRunLauncher"
    assert v["telemetry"]["enabled"] is False
    assert v["postgresql"]["enabled"] is False and "postgresqlPassword" not in v["postgresql"]
    assert v["generatePostgresqlPasswordSecret"] is False and v["global"]["postgresqlSecretName"]
    assert v["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    coord = v["dagsterDaemon"]["runCoordinator"]
    assert coord["enabled"] and coord["type"] == "QueuedRunCoordinator"
    # the limits of deploy/production/dagster.yaml, in the chart's own keys, and none left where the chart's
    # template would refuse them twice (_concurrency.tpl fails on limits in both places)
    queued = coord["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] is None and queued["tagConcurrencyLimits"] == []
    conc = v["concurrency"]
    production = yaml.safe_load((DEPLOY / "production" / "dagster.yaml").read_text())["concurrency"]
    assert conc["enabled"] is True
    assert conc["pools"] == {"granularity": production["pools"]["granularity"],
                             "defaultLimit": production["pools"]["default_limit"]} == {"granularity": "run",
                                                                                        "defaultLimit": 1}
    assert conc["runs"]["maxConcurrentRuns"] == production["runs"]["max_concurrent_runs"]
    assert conc["runs"]["tagConcurrencyLimits"] == production["runs"]["tag_concurrency_limits"] == [
        {"key": "erp_backup/source", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
    (dep,) = v["dagster-user-deployments"]["deployments"]
    assert dep["dagsterApiGrpcArgs"] == ["-m", MODULE] and dep["port"] == 4000
    assert dep["includeConfigInLaunchedRuns"]["enabled"] is True
    mounts = {m["mountPath"] for m in dep["volumeMounts"]}
    config = parse_settings(_sample_settings_data(), "sample", Path("/"))
    assert {str(config.state_dir), str(config.staging_dir), str(config.encryption.recipients_file.parent)} <= mounts
    assert dep["podSecurityContext"]["runAsUser"] == 10001  # the Dockerfile's APP_UID
    assert "ARG APP_UID=10001" in DOCKERFILE.read_text()


# ------------------------------------------------------------------------------------- sample config

SAMPLE_ENV = {"ERP_BACKUP_S3_BUCKET": "erp-backups", "ERP_BACKUP_S3_ACCESS_KEY_ID": "erp-backup",
              "ERP_BACKUP_S3_SECRET_ACCESS_KEY": "s3cret-value", "ERP_PG_HOST": "erp-db", "ERP_PG_USER": "erp_backup",
              "ERP_PG_DB": "erp_steinmetz", "ERP_PG_PASSWORD": "pg-secret"}


def _sample_settings_data() -> Any:
    return yaml.safe_load(SAMPLE_CONFIG.read_text())


def test_sample_config_parses_and_targets_the_compose_minio(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SAMPLE_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ERP_PG_PORT", raising=False)
    settings = parse_settings(_sample_settings_data(), str(SAMPLE_CONFIG), Path("/"))
    (s3,) = [d for d in settings.destinations if isinstance(d, S3DestinationSettings)]
    assert s3.endpoint_url == "http://minio:9000" and s3.bucket == "erp-backups"
    assert s3.secret_key() == "s3cret-value"
    assert settings.sources.postgres is not None and settings.sources.postgres.port == 5432
    # every path the config names is a mount of the code-server service
    mounts = [_short_mount(v)[1] for v in _compose()["services"]["code-server"]["volumes"]]
    paths = [settings.staging_dir, settings.state_dir, settings.encryption.recipients_file,
             settings.encryption.identity_file, *settings.sources.config.paths, settings.sources.uploads.path,
             *(d.path for d in settings.destinations if d.type == "local")]
    for p in paths:
        assert any(str(p) == m or str(p).startswith(m.rstrip("/") + "/") for m in mounts), f"{p}: not mounted"


def test_sample_config_fails_without_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SAMPLE_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ERP_BACKUP_S3_SECRET_ACCESS_KEY")
    with pytest.raises(Exception, match="ERP_BACKUP_S3_SECRET_ACCESS_KEY is not set"):
        parse_settings(_sample_settings_data(), str(SAMPLE_CONFIG), Path("/"))


# ------------------------------------------------------------------------------------- who reaches the UI


def test_only_the_read_only_webserver_is_exposed_and_only_through_its_proxy() -> None:
    """systemd: full control on 127.0.0.1:3000, read-only on 127.0.0.1:3001 behind nginx; compose: the same, the
    read-only one in a network namespace only nginx shares; Helm: a read-only webserver and NetworkPolicies that
    close the full-control one to every pod and open the read-only one to the ingress controller only."""
    units = {p.name: p.read_text() for p in SYSTEMD.glob("erp-backup-webserver*.service")}
    assert "dagster-webserver -h 127.0.0.1 -p 3000 " in units["erp-backup-webserver.service"]
    assert "dagster-webserver --read-only -h 127.0.0.1 -p 3001 " in units["erp-backup-webserver-readonly.service"]
    nginx = (DEPLOY / "nginx" / "erp-backup-ui.conf").read_text()
    assert "proxy_pass         http://127.0.0.1:3001;" in nginx and "auth_basic_user_file" in nginx
    assert "listen 443 ssl;" in nginx and "3000" not in nginx.split("server {", 1)[1]
    services = _compose()["services"]
    assert services["webserver"]["ports"] == ["127.0.0.1:3000:3000"]
    ro = services["webserver-readonly"]
    assert ro["command"][:5] == ["dagster-webserver", "--read-only", "-h", "127.0.0.1", "-p"] and ro["ports"] == ["443:443"]
    assert services["ui-proxy"]["network_mode"] == "service:webserver-readonly" and "ports" not in services["ui-proxy"]
    values = yaml.safe_load(HELM_VALUES.read_text())
    assert values["dagsterWebserver"]["enableReadOnly"] is True and values["dagsterWebserver"]["service"]["type"] == \
        "ClusterIP"
    policies = {d["metadata"]["name"]: d for d in yaml.safe_load_all((DEPLOY / "helm" / "network-policy.yaml").read_text())}
    closed = policies["erp-backup-webserver-full-control-closed"]["spec"]
    assert closed["podSelector"]["matchLabels"]["component"] == "dagster-webserver"
    assert closed["policyTypes"] == ["Ingress"] and closed["ingress"] == []
    opened = policies["erp-backup-webserver-read-only-from-ingress"]["spec"]
    assert opened["podSelector"]["matchLabels"]["component"] == "dagster-webserver-read-only"
    assert [r["from"][0]["namespaceSelector"]["matchLabels"] for r in opened["ingress"]] == [
        {"kubernetes.io/metadata.name": "ingress-nginx"}]
    assert opened["ingress"][0]["ports"] == [{"protocol": "TCP", "port": values["dagsterWebserver"]["service"]["port"]}]
