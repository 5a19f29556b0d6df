"""The layers: the core never imports dagster (checked in a fresh interpreter and by reading the source), nor the
configuration file's loader, the Dagster shell or the command line; every module says what it owns."""

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import erp_backup_pipeline.core as core


def test_core_modules_import_without_dagster() -> None:
    modules = [m.name for m in pkgutil.walk_packages(core.__path__, "erp_backup_pipeline.core.")]
    assert len(modules) >= 15
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) + "import erp_backup_pipeline.cli\n"
            "bad = sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.') or m.startswith('dagster_'))\n"
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_dagster_import_statement_in_core() -> None:
    root = Path(core.__file__).parent
    pattern = re.compile(r"^\s*(import|from)\s+dagster", re.M)
    offenders = [str(p) for p in root.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_core_never_imports_the_outer_layers() -> None:
    """core takes built objects and its plug-ins' own settings models; settings.py, orchestration/ and the CLI
    build on it, never the other way round."""
    root = Path(core.__file__).parent
    pattern = re.compile(r"^\s*(?:from|import)\s+erp_backup_pipeline\.(settings|orchestration|cli\w*)\b", re.M)
    offenders = [f"{p.relative_to(root)}: {m.group(0).strip()}" for p in sorted(root.rglob("*.py"))
                 for m in pattern.finditer(p.read_text())]
    assert offenders == []
    code = ("import sys\n" + "".join(f"import {m.name}\n" for m in pkgutil.walk_packages(core.__path__,
                                                                                        "erp_backup_pipeline.core."))
            + "bad = sorted(m for m in sys.modules if m.startswith(('erp_backup_pipeline.settings', "
              "'erp_backup_pipeline.orchestration', 'erp_backup_pipeline.cli')))\nprint(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_core_reads_the_configuration_only_through_a_site() -> None:
    """``core.site`` builds the configuration once; every other core function takes the built Site (or a plug-in's
    own settings model), never the whole configuration: no ``settings`` parameter, no untyped configuration."""
    root = Path(core.__file__).parent
    builders = {root / "site.py", root / "sources" / "__init__.py", root / "destinations" / "__init__.py"}
    whole = re.compile(r"def \w+\([^)]*\b(settings|config)\s*:\s*(Any|Settings|Configuration)\b")
    offenders = [f"{p.relative_to(root)}: {m.group(0)}" for p in sorted(root.rglob("*.py")) if p not in builders
                 for m in whole.finditer(p.read_text())]
    assert offenders == []
    untyped = [str(p) for p in Path(core.__file__).parent.parent.rglob("*.py") if "settings: Any" in p.read_text()]
    assert untyped == []


def test_every_module_has_a_docstring() -> None:
    root = Path(core.__file__).parent.parent
    missing = [str(p) for p in root.rglob("*.py") if not p.read_text().lstrip().startswith(('"""', "'''"))]
    assert missing == []


def test_the_benchmark_and_the_devkit_import_nothing_from_the_tests() -> None:
    root = Path(core.__file__).parent.parent.parent
    pattern = re.compile(r"^\s*(?:from|import)\s+erp_backup_pipeline_tests\b", re.M)
    files = sorted([*(root / "bench").rglob("*.py"), *(root / "erp_backup_pipeline_devkit").rglob("*.py")])
    assert len(files) >= 10
    assert [str(p.relative_to(root)) for p in files if pattern.search(p.read_text())] == []
