import json
import sys
import types

import pytest

from harness import hookimpl
from harness._run.registry import load_registry
from harness.errors import PluginError

BUILTINS = {("task", "synthetic_arithmetic"), ("teacher", "program"), ("student", "transformers"),
            ("strategy", "vanilla"), ("strategy", "fine_tune_cot"), ("sink", "local")}


def plugin_module(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))
    return module


def test_builtins_are_discovered_through_entry_points(registry):
    found = {(c.kind, c.name) for c in registry.all()}
    assert BUILTINS <= found
    for c in registry.all():
        if (c.kind, c.name) in BUILTINS:
            assert c.distribution == "harness"
    assert registry.problems == []


def test_autoload_switch(monkeypatch):
    monkeypatch.setenv("HARNESS_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = load_registry()
    assert registry.all() == []
    extra = plugin_module("extra", register_strategies=lambda register: register("mine", object))
    registry = load_registry([extra])
    assert [(c.kind, c.name, c.plugin) for c in registry.all()] == [("strategy", "mine", "extra")]


def test_duplicate_name_is_never_a_silent_take_over(monkeypatch):
    monkeypatch.setenv("HARNESS_DISABLE_PLUGIN_AUTOLOAD", "1")
    a = plugin_module("plugin_a", register_teachers=lambda register: register("same", int))
    b = plugin_module("plugin_b", register_teachers=lambda register: register("same", str))
    registry = load_registry([a, b])
    message = ("teacher 'same' is registered by plugin 'plugin_a' of distribution (registered in-process) and "
               "plugin 'plugin_b' of distribution (registered in-process); the harness never picks one silently. "
               "Name one: kind = \"plugin_a:same\" or kind = \"plugin_b:same\" (or uninstall one, or start "
               "without it with HARNESS_DISABLE_PLUGINS=<plugin>)")
    assert registry.problems == [message]
    with pytest.raises(PluginError) as exc:
        registry.get("teacher", "same")
    assert exc.value.message == message
    assert registry.get("teacher", "plugin_a:same").factory is int
    assert registry.get("teacher", "plugin_b:same").factory is str


def test_hook_that_raises_is_reported_and_others_still_load(monkeypatch):
    monkeypatch.setenv("HARNESS_DISABLE_PLUGIN_AUTOLOAD", "1")

    def boom(register):
        raise RuntimeError("kaput")

    bad = plugin_module("bad_plugin", register_tasks=boom)
    good = plugin_module("good_plugin", register_tasks=lambda register: register("fine", object))
    registry = load_registry([bad, good])
    assert [c.name for c in registry.all()] == ["fine"]
    assert registry.problems == ["plugin 'bad_plugin' ((registered in-process)) failed in hook register_tasks: "
                                 "RuntimeError: kaput"]


def test_unknown_component_message(registry):
    with pytest.raises(PluginError, match=r"unknown teacher 'progrm'. Did you mean 'program'\? Available: gold, hf, openai, "
                                          r"program, zero_shot_cot_log"):
        registry.get("teacher", "progrm")


@pytest.fixture
def broken_distribution(tmp_path, monkeypatch):
    """A real installed distribution (dist-info on sys.path) whose harness plugin fails to import."""
    (tmp_path / "broken_harness_plugin.py").write_text("raise ImportError('needs a package that is missing')\n")
    info = tmp_path / "harness_broken-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-broken\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[harness]\nbroken = broken_harness_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("HARNESS_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    yield
    sys.modules.pop("broken_harness_plugin", None)


def test_plugin_that_fails_to_import_does_not_take_the_cli_down(broken_distribution, cli):
    result = cli("plugins", "--json")
    assert result.code == 0
    data = json.loads(result.out)
    assert {(c["kind"], c["name"]) for c in data["components"]} >= BUILTINS
    assert data["problems"] == [
        "plugin 'broken' (distribution harness-broken 0.3) failed to load: ImportError: needs a package that is "
        "missing. Start without it with HARNESS_DISABLE_PLUGINS=broken"]
    table = cli("plugins")
    assert table.code == 0
    assert "failed to load" in table.err and "synthetic_arithmetic" in table.out


def test_disable_list_skips_a_plugin(broken_distribution, monkeypatch, cli):
    monkeypatch.setenv("HARNESS_DISABLE_PLUGINS", "broken")
    data = json.loads(cli("plugins", "--json").out)
    assert data["problems"] == []


def test_every_hookspec_is_documented():
    from harness import hookspecs

    from .conftest import REPO

    doc = (REPO / "docs" / "plugins" / "README.md").read_text()
    names = [n for n, f in vars(hookspecs).items() if callable(f) and hasattr(f, "harness_spec")]
    assert len(names) == 9
    missing = [n for n in names if f"### `{n}" not in doc]
    assert missing == [], f"hooks without a section in docs/plugins/README.md: {missing}"


def test_allow_list_loads_only_the_named(monkeypatch, cli):
    monkeypatch.setenv("HARNESS_PLUGINS", "program_teacher,vanilla_strategy")
    names = {(c["kind"], c["name"]) for c in json.loads(cli("plugins", "--json").out)["components"]}
    assert names == {("teacher", "program"), ("strategy", "vanilla")}
    monkeypatch.setenv("HARNESS_PLUGINS", "harness")  # a distribution name allows all its entry points
    assert len(json.loads(cli("plugins", "--json").out)["components"]) > 10


class _FakeDist:
    def __init__(self, name: str, version: str):
        self.metadata, self.version = {"Name": name}, version


class _FakeEntryPoint:
    """An entry point of another installed distribution (what pip would make), without installing one."""

    def __init__(self, name: str, module, dist: str, version: str):
        self.name, self.module, self.dist = name, module, _FakeDist(dist, version)

    def load(self):
        return self.module


def test_a_third_party_name_colliding_with_a_built_in_is_refused_naming_both(monkeypatch, tmp_path, cli):
    import harness._run.registry as plugins_module
    from harness_builtins.strategy_fine_tune_cot import FineTuneCoT

    from .conftest import TINY

    real = plugins_module.entry_points
    rival = plugin_module("rival_ftc", register_strategies=lambda register: register("fine_tune_cot", FineTuneCoT))
    fake = _FakeEntryPoint("aaa_rival", rival, "harness-rival", "9.9")  # sorts first: it used to win silently
    monkeypatch.setattr(plugins_module, "entry_points", lambda group: [fake, *real(group=group)])
    recipe = tmp_path / "r.toml"
    recipe.write_text(TINY)
    result = cli("validate", recipe)
    assert result.code == 2
    assert ("strategy[1].kind: strategy 'fine_tune_cot' is registered by plugin 'aaa_rival' of distribution "
            "harness-rival and plugin 'fine_tune_cot_strategy' of distribution harness" in result.err)
    assert 'kind = "harness-rival:fine_tune_cot" or kind = "harness:fine_tune_cot"' in result.err
    recipe.write_text(TINY.replace('kind = "fine_tune_cot"', 'kind = "harness:fine_tune_cot"'))
    assert cli("validate", recipe, "--no-load-checks").code == 0
    listing = cli("plugins", "--json")
    rows = [r for r in json.loads(listing.out)["components"] if r["name"] == "fine_tune_cot"]
    assert [r["distribution"] for r in rows] == ["harness-rival", "harness"]
    assert all(r["note"].startswith("collision: recipes name it kind = ") for r in rows)
