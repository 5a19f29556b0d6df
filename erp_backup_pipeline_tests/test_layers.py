"""The core never imports dagster: checked in a fresh interpreter and by reading the source."""

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


def test_every_module_has_a_docstring() -> None:
    root = Path(core.__file__).parent.parent
    missing = [str(p) for p in root.rglob("*.py") if not p.read_text().lstrip().startswith(('"""', "'''"))]
    assert missing == []
