"""Third-party plugins: installed as their own packages, found with no change to this repository."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import harness
from harness.testing import tiny_recipe

from .conftest import REPO

EXAMPLE = REPO / "examples" / "harness-self-consistency"


def install(source: Path, target: Path) -> dict:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(source)], check=True, capture_output=True, timeout=300)
    return {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def harness_cli(env, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_example_package_is_discovered_and_runs_end_to_end(tmp_path):
    env = install(EXAMPLE, tmp_path / "site")
    listed = json.loads(harness_cli(env, "plugins", "--json").stdout)
    assert {"kind": "strategy", "name": "self_consistency", "plugin": "self_consistency",
            "distribution": "harness-self-consistency", "version": "0.1.0", "note": ""} in listed["components"]
    recipe = tmp_path / "sc.toml"
    recipe.write_text(tiny_recipe(str(tmp_path), 'kind = "self_consistency"\nk = 3'))
    done = harness_cli(env, "run", recipe)
    assert done.returncode == 0, done.stderr
    (samples,) = (tmp_path / "runs" / "tiny" / "evaluate-self_consistency" / "lm_eval").rglob("samples_*.jsonl")
    assert len(samples.read_text().splitlines()) == 8
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                           env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert tests.returncode == 0, tests.stdout
    # and uninstalled: the package's folder on the path, registered by its tests' plugin_registered only
    source = {**env, "PYTHONPATH": str(EXAMPLE)}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                           env=source, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert tests.returncode == 0, tests.stdout


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["strategy", "teacher"])
def test_new_plugin_template_installs_and_its_test_passes(tmp_path, kind, cli):
    result = cli("new-plugin", f"my_{kind}", "--kind", kind, "--dir", tmp_path)
    assert result.code == 0
    root = tmp_path / f"harness-my-{kind}"
    env = install(root, tmp_path / "site")
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                           env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert tests.returncode == 0, tests.stdout
    listed = json.loads(harness_cli(env, "plugins", "--json").stdout)["components"]
    assert any(c["name"] == f"my_{kind}" and c["distribution"] == f"harness-my-{kind}" for c in listed)


def test_new_plugin_refuses_bad_names_and_existing_folders(tmp_path, cli):
    assert cli("new-plugin", "Bad-Name", "--kind", "sink", "--dir", tmp_path).code == 2
    assert cli("new-plugin", "ok", "--kind", "sink", "--dir", tmp_path).code == 0
    again = cli("new-plugin", "ok", "--kind", "sink", "--dir", tmp_path)
    assert again.code == 2 and "exists already" in again.err


def test_public_api_is_explicit_and_typed():
    assert set(harness.__all__) >= {"Example", "Generation", "GradedGeneration", "TrainingExample", "AnswerSpec",
                                    "SubStep", "TrainingSettings", "Task", "Teacher", "Student", "Strategy", "Sink",
                                    "HarnessError", "BadInputError", "DataError", "PluginError", "RunError",
                                    "hookimpl", "PUBLIC_MODULES"}
    for name in harness.__all__:
        assert hasattr(harness, name), name
    assert (Path(harness.__file__).parent / "py.typed").exists()


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_plugins_and_examples_import_only_public_modules_and_no_other_plugin():
    """Built-ins live by the public API like third parties: every file under plugins/ and examples/ imports
    harness modules from harness.PUBLIC_MODULES only, and no plugin imports another plugin's module (a plugin
    package's own modules import each other relatively)."""
    files = sorted((REPO / "plugins").rglob("*.py")) + sorted((REPO / "examples").rglob("*.py"))
    assert len(files) > 20
    private, crossing = [], []
    for f in files:
        for module in _imports(f):
            if module.split(".")[0] == "harness" and module not in harness.PUBLIC_MODULES:
                private.append(f"{f.relative_to(REPO)}: {module}")
            if module.startswith("harness_builtins") and "tests" not in f.parts:
                crossing.append(f"{f.relative_to(REPO)}: {module}")
    assert private == [] and crossing == []
    used = _imports(EXAMPLE / "harness_self_consistency" / "__init__.py")
    assert {"harness", "harness.answers", "harness.generation"} <= used


def test_the_declared_contract_replaces_probing():
    """The pipeline calls the members harness.components declares; it probes no component."""
    text = (REPO / "harness" / "pipeline.py").read_text()
    for probe in ('getattr(strategy', 'getattr(teacher', 'getattr(student', 'getattr(task', 'hasattr(',
                  'inspect.signature', 'getattr(s, '):
        assert probe not in text, probe
    assert "import inspect" not in text


def test_plugin_registered_for_one_test(cli):
    from harness import hookimpl
    from harness.testing import FakeTeacher, plugin_registered

    class Plugin:
        @hookimpl
        def register_teachers(self, register):
            register("fake", FakeTeacher)

    with plugin_registered(Plugin()):
        assert "fake" in cli("plugins").out
    assert "fake" not in cli("plugins").out
