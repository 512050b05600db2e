"""The plugin guide is the contract a third party builds on: its example package, written out from the guide's
own code blocks, installs, is listed, passes its own tests installed and uninstalled, and runs end to end; and
the guide documents every hook and every member the interfaces declare."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from harness import components, hookspecs

from .conftest import REPO

GUIDE = REPO / "docs" / "plugins" / "README.md"


def guide_files() -> dict[str, str]:
    """The guide's code blocks whose first line is ``# file: NAME``."""
    blocks = re.findall(r"```(?:python|toml)\n# file: (\S+)\n(.*?)```", GUIDE.read_text(), re.S)
    return {name: body for name, body in blocks}


def test_the_guide_documents_every_hook_and_every_member():
    text = GUIDE.read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith(("register_", "on_"))]
    assert len(hooks) == 9
    for hook in hooks:
        assert f"### `{hook}(" in text, hook
    for kind, base in components.BASES.items():
        for member in (*components.REQUIRED[kind], *components._OPTIONAL[kind]):
            assert f"`{base.__name__}.{member}" in text, f"{base.__name__}.{member}"
    assert "harness.cli" in text and "private" in text


@pytest.mark.slow
def test_the_guides_package_installs_lists_and_passes_its_tests_both_ways(tmp_path):
    files = guide_files()
    assert set(files) == {"pyproject.toml", "harness_least_to_most.py", "test_least_to_most.py"}
    package = tmp_path / "harness-least-to-most"
    package.mkdir()
    for name, body in files.items():
        (package / ("tests" if name.startswith("test_") else "") / name).parent.mkdir(exist_ok=True)
        (package / ("tests" if name.startswith("test_") else "") / name).write_text(body)
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests")]
    uninstalled = subprocess.run(tests, env={**env, "PYTHONPATH": str(package)}, capture_output=True, text=True,
                                 timeout=600, cwd=tmp_path)
    assert uninstalled.returncode == 0, uninstalled.stdout + uninstalled.stderr
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(package)], check=True, capture_output=True, timeout=300)
    listed = subprocess.run([sys.executable, "-m", "harness.cli", "plugins", "--json"],
                            env={**env, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=120)
    rows = json.loads(listed.stdout)["components"]
    assert {"kind": "strategy", "name": "least_to_most", "distribution": "harness-least-to-most"} in [
        {k: r[k] for k in ("kind", "name", "distribution")} for r in rows]
    installed = subprocess.run(tests, env={**env, "PYTHONPATH": str(site)}, capture_output=True, text=True,
                               timeout=600, cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
