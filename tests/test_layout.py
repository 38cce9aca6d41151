"""The package stands on its own: every module of `poller` imports with only the package on
sys.path (no app.py, lookup.py or lambda_function.py beside it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORT_ALL = """
import importlib, pkgutil, sys
import poller
names = [m.name for m in pkgutil.walk_packages(poller.__path__, "poller.")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def test_every_poller_module_imports_without_the_repository_root(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "poller", tmp_path / "poller", ignore=shutil.ignore_patterns("__pycache__")
    )
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n{IMPORT_ALL}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 40


def test_lookup_is_the_face_of_the_client() -> None:
    import lookup
    from poller.run import client

    assert lookup.PlatformClient is client.PlatformClient
    assert lookup.ClientPool is client.ClientPool
