"""The ``harness`` command. Thin: parse, call, turn HarnessError into a message and an exit code.

Exit codes: 0 success, 1 a failure while running, 2 bad input (recipe, options, data, plugins), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from harness import __version__
from harness.errors import BadInputError, HarnessError, RecipeError
from harness.ui import stdout_console


def _registry():
    from harness.plugins import load_registry

    return load_registry()


def _warn_problems(registry, console: Console) -> None:
    for problem in registry.problems:
        console.print(f"[yellow]warning:[/yellow] {problem}", highlight=False)


def cmd_run(args: argparse.Namespace, err: Console) -> int:
    from harness.pipeline import Pipeline
    from harness.recipe import load_recipe
    from harness.ui import UI

    registry = _registry()
    _warn_problems(registry, err)
    recipe = load_recipe(args.recipe, registry, args.set)
    ui = UI(err)
    ui.note(f"[bold]harness run[/bold] {recipe.path} -> {os.path.join(recipe.run.output_dir, recipe.name)}")
    Pipeline(recipe, registry, ui, force=args.force, from_stage=args.from_stage).run()
    return 0


def cmd_validate(args: argparse.Namespace, err: Console) -> int:
    from harness.recipe import load_recipe

    registry = _registry()
    _warn_problems(registry, err)
    recipe = load_recipe(args.recipe, registry, args.set)
    for kind, specs in (("task", [recipe.task]), ("teacher", [recipe.teacher]), ("strategy", recipe.strategies),
                        ("student", recipe.students), ("sink", recipe.sinks)):
        for spec in specs:  # constructing a component loads no model and touches no data
            registry.get(kind, spec.kind).factory(spec.config)
    runs = len(recipe.strategies) * len(recipe.students)
    print(f"{recipe.path}: ok ({recipe.task.kind} task, {recipe.teacher.kind} teacher, "
          f"{len(recipe.strategies)} strateg{'y' if len(recipe.strategies) == 1 else 'ies'}, "
          f"{len(recipe.students)} student{'s' if len(recipe.students) != 1 else ''}: {runs} "
          f"training run{'s' if runs != 1 else ''})")
    return 0


def cmd_plugins(args: argparse.Namespace, err: Console) -> int:
    registry = _registry()
    rows = [{"kind": c.kind, "name": c.name, "plugin": c.plugin, "distribution": c.distribution,
             "version": c.version} for c in registry.all()]
    if args.json:
        print(json.dumps({"components": rows, "problems": registry.problems}, indent=2))
        return 0
    table = Table(title="harness components")
    for col in ("kind", "name", "plugin", "distribution", "version"):
        table.add_column(col)
    for row in rows:
        table.add_row(*(row[c] for c in ("kind", "name", "plugin", "distribution", "version")))
    stdout_console().print(table)
    _warn_problems(registry, err)
    return 0


def cmd_tasks(args: argparse.Namespace, err: Console) -> int:
    from harness.config import build
    from harness.pipeline import split_overlap

    registry = _registry()
    rows = []
    for name in sorted(registry.components["task"]):
        factory = registry.get("task", name).factory
        config_cls = getattr(factory, "Config", None)
        options = {"data_dir": args.data_dir} if args.data_dir and config_cls and "data_dir" in getattr(
            config_cls, "__dataclass_fields__", {}) else {}
        row = {"task": name, "train": None, "validation": None, "test": None, "overlap": None, "source": ""}
        try:
            problems: list[str] = []
            config = build(config_cls, options, "task", problems) if config_cls else None
            task = factory(config)
            splits = task.load()
            row.update({k: len(splits.get(k, [])) for k in ("train", "validation", "test")},
                       overlap=len(split_overlap(splits)), source=task.source())
        except HarnessError as exc:
            row["source"] = f"unavailable: {exc.message}"
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="harness tasks")
    for col in ("task", "train", "validation", "test", "test in train", "source"):
        table.add_column(col, justify="right" if col in ("train", "validation", "test", "test in train") else "left",
                         overflow="fold")
    for r in rows:
        table.add_row(r["task"], *("-" if r[k] is None else str(r[k]) for k in ("train", "validation", "test",
                                                                                 "overlap")), r["source"])
    stdout_console().print(table)
    _warn_problems(registry, err)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description="Distil chain-of-thought from teachers into students.")
    p.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_recipe(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("recipe", help="the recipe TOML file")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set training.max_steps=100 (repeatable)")

    run = sub.add_parser("run", help="run a recipe (skipping work already done)")
    with_recipe(run)
    run.add_argument("--force", action="store_true", help="re-run every stage")
    run.add_argument("--from", dest="from_stage", metavar="STAGE",
                     help="re-run this stage and every later one (task, teach, filter, build, train, evaluate, "
                          "publish)")
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check a recipe and resolve its components without running")
    with_recipe(validate)
    validate.set_defaults(func=cmd_validate)

    plugins = sub.add_parser("plugins", help="list the registered components and their plugins")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(func=cmd_plugins)

    tasks = sub.add_parser("tasks", help="list tasks with their split sizes and where their data comes from")
    tasks.add_argument("--data-dir", help="local data folder (default: $HARNESS_DATA_DIR)")
    tasks.add_argument("--json", action="store_true", help="print JSON")
    tasks.set_defaults(func=cmd_tasks)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # The harness draws its own progress bars; the libraries' tqdm bars would interleave with them.
    os.environ.setdefault("TQDM_DISABLE", "1")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # argparse: 2 for a usage error, 0 for --help
        return int(exc.code or 0)
    try:
        return args.func(args, err)
    except RecipeError as exc:
        for problem in exc.problems:
            err.print(f"error: {problem}", markup=False)
        n = len(exc.problems)
        err.print(f"{n} problem{'s' if n != 1 else ''} found", markup=False)
        return exc.exit_code
    except HarnessError as exc:
        err.print(f"error: {exc.message}", markup=False)
        if not isinstance(exc, BadInputError):
            err.print("finished stages are kept; run the same command again to resume", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted; finished stages are kept; run the same command again to resume", markup=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
