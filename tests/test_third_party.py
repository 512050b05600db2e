"""Third-party plugins: installed as their own packages, found with no change to this repository."""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import harness
from harness.testing import tiny_recipe

from .conftest import REPO

EXAMPLE = REPO / "examples" / "harness-self-consistency"


def install(source: Path, target: Path) -> dict:
    """pip-install ``source`` into ``target``. setuptools builds in the source tree (build/, *.egg-info), so a
    source inside the checkout is copied next to ``target`` first."""
    if source.is_relative_to(REPO):
        copy = target.parent / f"src-{source.name}"
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info"), dirs_exist_ok=True)
        source = copy
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


@pytest.mark.slow
def test_a_new_plugin_version_re_runs_its_stages_and_results_name_it(tmp_path, cli):
    """A third party changes its strategy and bumps its version: the stages that ran its code run again (never
    "up to date" with the old code), the ones above it do not, and the published result names plugin and version."""
    assert cli("new-plugin", "my_strategy", "--kind", "strategy", "--dir", tmp_path).code == 0
    root = tmp_path / "harness-my-strategy"
    env = install(root, tmp_path / "site")
    recipe = tiny_recipe(tmp_path, 'kind = "my_strategy"', steps=4, path=tmp_path / "r.toml")
    first = harness_cli(env, "run", recipe)
    assert first.returncode == 0, first.stderr

    def results() -> dict:
        found = max((tmp_path / "results").rglob("results_*.json"), key=lambda f: f.stat().st_mtime)  # the latest
        return json.loads(found.read_text())["harness"]

    assert results()["plugins"]["strategy"] == {"plugin": "my_strategy", "distribution": "harness-my-strategy",
                                                "version": "0.1.0", "source": results()["plugins"]["strategy"]["source"]}

    def line(out: str, label: str) -> str:
        (found,) = [x for x in out.splitlines() if x[2:].startswith(f"{label} ")]  # stage lines go to stderr
        return found

    same = harness_cli(env, "run", recipe)
    assert "up to date" in line(same.stderr, "build my_strategy")
    module = root / "harness_my_strategy" / "__init__.py"
    module.write_text(module.read_text() + "\n# a changed loss\n")
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))
    env = install(root, tmp_path / "site-upgraded")  # as pip upgrades in an environment: the old version gone
    second = harness_cli(env, "run", recipe)
    assert second.returncode == 0, second.stderr
    for stage in ("build my_strategy", "train my_strategy", "evaluate my_strategy"):
        assert "up to date" not in line(second.stderr, stage), second.stderr
    assert "up to date" in line(second.stderr, "task"), second.stderr  # its code did not run there
    assert results()["plugins"]["strategy"]["version"] == "0.2.0"


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
    """The engine calls the members harness.components declares; it probes no component."""
    engine = [*(REPO / "harness" / "_run").glob("*.py"), *(REPO / "harness" / "_evaluation").glob("*.py")]
    engine = [f for f in engine if f.name != "lm_eval_run.py"]  # it patches lm-eval's modules, not components
    assert any(f.name == "pipeline.py" for f in engine)
    for f in engine:
        text = f.read_text()
        for probe in ('getattr(strategy', 'getattr(teacher', 'getattr(student', 'getattr(task', 'hasattr(',
                      'inspect.signature', 'getattr(s, '):
            assert probe not in text, (f.name, probe)
        assert "import inspect" not in text, f.name


def test_public_modules_are_the_public_ones_by_place():
    """What plugins may import is what ``ls harness/`` shows as public: every top-level module whose name does
    not start with ``_``; the engine lives in ``_``-prefixed packages and modules."""
    root = REPO / "harness"
    by_place = {"harness"} | {f"harness.{p.stem}" for p in root.glob("*.py")
                              if not p.stem.startswith("_")}
    assert set(harness.PUBLIC_MODULES) == by_place
    private = sorted(p.name for p in root.iterdir() if p.name.startswith("_") and p.name != "__init__.py"
                     and p.name != "__pycache__")
    assert {"_run", "_evaluation", "_results"} <= set(private)
    for name in private:  # nothing private pretends to be public inside
        assert not (root / name).is_dir() or (root / name / "__init__.py").is_file(), name


def test_no_import_cycle_between_modules():
    """Modules import downwards only: no module of the harness or of the built-in plugins reaches itself again
    through its imports, lazy ones (inside functions) included. Two kinds of edge are left out: importing from a
    package's ``__init__`` that re-exports (not a dependency on every module it re-exports), and a public module's
    function calling into the engine lazily (``harness.components.create``, ``harness.cli``: public entry points
    over the private engine, which the engine never calls back)."""
    import importlib.util

    def module_name(path: Path) -> str:
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[0] == "plugins":
            parts[0] = "harness_builtins"
        if parts[-1] == "__init__":
            parts.pop()
        return ".".join(parts)

    files = [*(REPO / "harness").rglob("*.py"), *(REPO / "plugins").rglob("*.py")]
    names = {module_name(f): f for f in files}
    packages = {module_name(f) for f in files if f.name == "__init__.py"}
    graph: dict[str, set[str]] = {}
    for name, f in names.items():
        deps = set()
        tree = ast.parse(f.read_text())
        lazy = {id(n) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                for n in ast.walk(fn)}
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(block)}
        public = name.startswith("harness.") and not name.split(".")[1].startswith("_")
        for node in ast.walk(tree):
            if id(node) in typing_only:  # annotations only: never imported at run time
                continue
            if isinstance(node, ast.ImportFrom):
                package = name if f.name == "__init__.py" else name.rpartition(".")[0]
                base = (importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level
                        else node.module or "")
                candidates = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            if public and id(node) in lazy:
                candidates = [c for c in candidates if not c.startswith("harness._")]
            deps.update(c for c in candidates if c in names and c != name and (c not in packages or
                                                                               f.name == "__init__.py"))
        graph[name] = deps

    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []
