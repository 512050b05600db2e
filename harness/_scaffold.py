"""``harness new-plugin NAME --kind KIND``: a ready-to-install plugin package skeleton with a passing test."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from harness.errors import BadInputError

BODIES = {
    "strategy": '''class {cls}(Strategy):
    """Answer-only fine-tuning with a configurable separator (replace with your strategy). Every member
    harness.Strategy declares (roles, max_gen_toks, lm_eval_model, ...) has a default; override what you need."""

    Config = Config
    uses_teacher = False

    def __init__(self, config: Config):
        self.config = config

    def prompt(self, example) -> str:
        return f"{{example.question}}{{self.config.separator}}"

    def stop(self) -> list[str]:
        return []

    def build(self, examples, generations, task) -> list[TrainingExample]:
        return [TrainingExample(e.id, self.prompt(e), f" {{e.answer}}") for e in examples]
''',
    "teacher": '''class {cls}(Teacher):
    """Answers every question with the gold answer and a fixed rationale (replace with your teacher)."""

    Config = Config

    def __init__(self, config: Config):
        self.config = config

    def generate(self, examples, task, progress) -> list[list[Generation]]:
        out = []
        for e in examples:
            out.append([Generation(e.id, 0, self.config.rationale, e.answer)])
            progress(1)
        return out
''',
    "task": '''class {cls}(Task):
    """Three arithmetic questions (replace with your benchmark's loader)."""

    Config = Config
    answer = AnswerSpec(kind="number", trigger="Therefore, the answer (arabic numerals) is")

    def __init__(self, config: Config):
        self.config = config

    def source(self) -> str:
        return "built in"

    def load(self) -> dict[str, list[Example]]:
        items = [Example(f"q{{i}}", f"What is {{i}} + {{i}}?", str(2 * i)) for i in range(3)]
        return {{"train": items[:2], "validation": [], "test": items[2:]}}
''',
    "student": '''class {cls}(Student):
    """Skeleton: train a model on the pairs and save it so that ``load`` returns (model, tokenizer)."""

    Config = Config

    def __init__(self, config: Config):
        self.config = config

    def train(self, train, settings, out_dir, corpus, progress, context) -> dict:
        raise NotImplementedError("train your model here; call progress(1) per optimizer step")

    def load(self, model_dir):
        raise NotImplementedError("return (model, tokenizer) for lm-eval's HF wrapper")
''',
    "sink": '''class {cls}(Sink):
    """Copies lm-eval's files into a folder (replace with your destination)."""

    Config = Config

    def __init__(self, config: Config):
        self.config = config

    def publish(self, results_file, samples_files, provenance) -> list[str]:
        import shutil
        from pathlib import Path

        target = Path(self.config.dir)
        target.mkdir(parents=True, exist_ok=True)
        return [shutil.copy(p, target) for p in [results_file, *samples_files]]
''',
}
CONFIGS = {"strategy": 'separator: str = " ###"', "teacher": 'rationale: str = "Because."', "task": "size: int = 3",
           "student": 'model: str = ""', "sink": 'dir: str = "published"'}
IMPORTS = {"strategy": "Strategy, TrainingExample, hookimpl", "teacher": "Generation, Teacher, hookimpl",
           "task": "AnswerSpec, Example, Task, hookimpl", "student": "Student, hookimpl", "sink": "Sink, hookimpl"}
HOOKS = {"strategy": "register_strategies", "teacher": "register_teachers", "task": "register_tasks",
         "student": "register_students", "sink": "register_sinks"}
CHECKS = {
    "strategy": '''    task = create("task", "synthetic_arithmetic")
    rows = component.build([Example("a", "What is 1 + 1?", "2")], {}, task)
    assert [(r.prompt, r.target) for r in rows] == [("What is 1 + 1? ###", " 2")]''',
    "teacher": '''    task = create("task", "synthetic_arithmetic")
    (gens,) = component.generate([Example("a", "What is 1 + 1?", "2")], task, lambda n: None)
    assert gens[0].answer_text == "2"''',
    "task": '''    splits = component.load()
    assert len(splits["train"]) == 2 and splits["test"][0].answer == "4"''',
    "student": '''    assert callable(component.train) and callable(component.load)''',
    "sink": '''    assert callable(component.publish)''',
}


def new_plugin(name: str, kind: str, parent: Path) -> Path:
    if kind not in BODIES:
        raise BadInputError(f"--kind: '{kind}'; choose from {', '.join(BODIES)}")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise BadInputError(f"NAME: '{name}' must be lowercase letters, digits and '_' (it names the component)")
    package = f"harness-{name.replace('_', '-')}"
    module = f"harness_{name}"
    root = parent / package
    if root.exists():
        raise BadInputError(f"{root} exists already; choose another NAME or folder")
    cls = "".join(part.capitalize() for part in name.split("_"))
    (root / module).mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pyproject.toml").write_text(f'''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{package}"
version = "0.1.0"
description = "A harness {kind}: {name}"
requires-python = ">=3.11"
# The plugin interface it was written against (harness follows semantic versioning for harness.PUBLIC_MODULES).
dependencies = ["harness>=0.1,<0.2"]

[project.entry-points.harness]
{name} = "{module}"

[tool.setuptools]
packages = ["{module}"]
''')
    (root / module / "__init__.py").write_text(f'''"""The harness {kind} '{name}'."""

from __future__ import annotations

from dataclasses import dataclass

from harness import {IMPORTS[kind]}


@dataclass(frozen=True)
class Config:
    """The recipe keys of this {kind} (validated by harness: unknown keys and wrong types are reported)."""

    {CONFIGS[kind]}


{BODIES[kind].format(cls=cls)}

@hookimpl
def {HOOKS[kind]}(register):
    register("{name}", {cls})
''')
    test_file = root / "tests" / f"test_{name}.py"
    test_file.write_text(f'''"""Runs installed (pip install ./{package}) and uninstalled (the module on the
path) alike."""

from harness import Example
from harness.components import create
from harness.testing import plugin_registered

import {module}


def test_registered_and_works():
    with plugin_registered({module}):
        component = create("{kind}", "{name}")
{textwrap.indent(CHECKS[kind], "    ")}
''')
    (root / "README.md").write_text(f"# {package}\n\nA harness {kind}. Install with `pip install ./{package}`; then "
                                    f"`harness plugins` lists `{name}` and recipes use `kind = \"{name}\"`.\n"
                                    f"Run the tests with `pytest tests`.\n")
    return root
