"""The ``harness`` command. Thin: parse, call, turn HarnessError into a message and an exit code.

Exit codes: 0 success, 1 a failure while running, 2 bad input (recipe, options, data, plugins) or an environment that
refuses (an unwritable file, a server that errs), 130 interrupted, 143 terminated.

About 440 lines, on purpose: the parser and the command functions it dispatches to stay in one file, the one
place that lists every command and its options; the error boundary lives in ``harness._boundary``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness import __version__
from harness._boundary import http_failure, stop_on_sigterm, write_failure, write_output
from harness._run.ui import stdout_console
from harness.errors import BadInputError, HarnessError, RecipeError
from harness.secrets import redact


def _registry():
    from harness._run.registry import load_registry

    return load_registry()


def _warn(registry, err: Console) -> None:
    """The plugins that failed to load or collided, as warnings (the rest of the command goes on)."""
    for problem in registry.problems:
        err.print(f"[yellow]warning:[/yellow] {problem}", highlight=False)


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[str] = ()) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def cmd_run(args: argparse.Namespace, err: Console) -> int:
    from harness._run.pipeline import Pipeline
    from harness._run.recipe import load_recipe
    from harness._run.ui import UI

    registry = _registry()
    _warn(registry, err)
    recipe = load_recipe(args.recipe, registry, args.set)
    ui = UI(err)
    ui.note(f"[bold]harness run[/bold] {recipe.path} -> {os.path.join(recipe.run.output_dir, recipe.name)}")
    Pipeline(recipe, registry, ui, force=args.force, from_stage=args.from_stage, wait_for_lock=args.wait).run()
    return 0


def cmd_train(args: argparse.Namespace, err: Console) -> int:
    """Another node of a multi-node training: node 0 runs ``harness run``; this joins its training stages."""
    from harness._run.pipeline import Pipeline
    from harness._run.recipe import load_recipe
    from harness._run.ui import UI

    rank = args.node_rank if args.node_rank is not None else int(os.environ.get("SLURM_NODEID", "0") or 0)
    registry = _registry()
    _warn(registry, err)
    recipe = load_recipe(args.recipe, registry, args.set)
    if recipe.training.nodes < 2:
        raise BadInputError(f"{recipe.path}: training.nodes is {recipe.training.nodes}; harness train joins a "
                            f"training on several nodes (set training.nodes), harness run trains on one")
    if not 0 <= rank < recipe.training.nodes:
        raise BadInputError(f"--node-rank {rank}: this recipe trains on nodes 0-{recipe.training.nodes - 1}")
    ui = UI(err)
    ui.note(f"[bold]harness train[/bold] {recipe.path}: node {rank} of {recipe.training.nodes}")
    Pipeline(recipe, registry, ui, node_rank=rank, wait=args.wait).run()
    return 0


def cmd_validate(args: argparse.Namespace, err: Console) -> int:
    from harness._run.assembly import assemble
    from harness._run.recipe import load_recipe

    registry = _registry()
    _warn(registry, err)
    recipe = load_recipe(args.recipe, registry, args.set)
    parts = assemble(recipe, registry)  # constructing the components loads no model and touches no data
    problems = [] if args.no_load_checks else parts.problems()
    if problems:  # what would fail after the teacher was paid: model folders, hub ids, architectures
        raise RecipeError(problems)
    print(f"{recipe.path}: ok ({recipe.describe()})")
    return 0


def cmd_estimate(args: argparse.Namespace, err: Console) -> int:
    """The teacher bill before the teach stage runs: requests, tokens and cost, minus what the cache holds."""
    from harness._run.assembly import assemble
    from harness._run.recipe import load_recipe

    registry = _registry()
    recipe = load_recipe(args.recipe, registry, args.set)
    parts = assemble(recipe, registry)
    if not any(s.uses_teacher for s in parts.strategies.values()):
        print(f"{recipe.path}: no strategy uses the teacher: the run sends it nothing")
        return 0
    train = parts.task.load().get("train") or []
    est = parts.teacher.estimate(train, parts.task)
    if est is None:
        print(f"{recipe.path}: the {recipe.teacher.kind} teacher answers {len(train):,} questions at no API cost "
              f"(it does not bill requests)")
        return 0
    tokens = f"{est.input_tokens:,}" if est.tokens_counted else f"≈{est.input_tokens:,} (estimated)"
    columns = ("requests to send", "completions cached", "prompt tokens", "output tokens (at most)", "cost (at most)")
    out = stdout_console()
    out.print(_table(f"teacher bill before the run: {recipe.teacher.kind} teacher, {len(train):,} questions", columns,
                     [(f"{est.requests:,}", f"{est.cached:,}", tokens, f"{est.output_tokens:,}",
                       f"${est.cost:,.4f}" if est.cost else "no prices given")], right=columns))
    for note in est.notes:
        out.print(f"note: {note}", markup=False)
    if args.json:
        write_output(Path(args.json), json.dumps(est.as_dict() | {"tokens_counted": est.tokens_counted,
                                                                  "notes": est.notes}, indent=2) + "\n", "--json")
    return 0


def cmd_plugins(args: argparse.Namespace, err: Console) -> int:
    registry = _registry()
    rows = [{"kind": c.kind, "name": c.name, "plugin": c.plugin, "distribution": c.distribution,
             "version": c.version,
             "note": f'collision: recipes name it kind = "{registry.qualified(c)}"'
             if (c.kind, c.name) in registry.collisions else ""}
            for c in registry.all()]
    if args.json:
        print(json.dumps({"components": rows, "problems": registry.problems}, indent=2))
        return 0
    columns = ("kind", "name", "plugin", "distribution", "version", "note")
    stdout_console().print(_table("harness components", columns, [[r[c] for c in columns] for r in rows]))
    _warn(registry, err)
    return 0


def cmd_tasks(args: argparse.Namespace, err: Console) -> int:
    from harness._run.catalog import task_rows

    registry = _registry()
    rows = task_rows(registry, args.data_dir)
    broken = [r["task"] for r in rows if r.get("broken")]
    code = 1 if broken or registry.problems else 0  # data not downloaded is not broken; a failing plugin is
    if args.json:
        print(json.dumps(rows, indent=2))
        return code
    counts = ("train", "validation", "test", "overlap")
    stdout_console().print(_table(
        "harness tasks", ("task", "train", "validation", "test", "test in train", "source"),
        [[r["task"], *("-" if r[k] is None else str(r[k]) for k in counts), r["source"]] for r in rows],
        right=("train", "validation", "test", "test in train")))
    _warn(registry, err)
    if broken:
        err.print(f"error: {len(broken)} task plugin{'s' if len(broken) != 1 else ''} failed to load "
                  f"({', '.join(broken)}): see its row", markup=False)
    return code


def _rows(args: argparse.Namespace):
    from harness._results.rows import select

    return select(Path(args.dir), latest=not args.all, reference=args.reference, sort=args.sort,
                  **{field: getattr(args, field) for field in ("task", "strategy", "student", "teacher")})


def cmd_leaderboard(args: argparse.Namespace, err: Console) -> int:
    from harness._results.plots import draw_all
    from harness._results.views import VIEWS

    rows = _rows(args)
    console = stdout_console()
    shown = VIEWS[args.view].render(rows, args.format, draw_all(rows, "svg") if args.format == "html" else None,
                                    width=console.width)
    if isinstance(shown, str):
        sys.stdout.write(shown)
    else:
        console.print(shown)
    return 0


def cmd_plot(args: argparse.Namespace, err: Console) -> int:
    from harness._results.plots import write_all

    written = write_all(_rows(args), Path(args.out), args.image_format)
    for path in written:
        print(path)
    if not written:
        err.print("no plot: the results hold no student sizes, diverse-sample counts, teacher costs or teacher "
                  "accuracies")
    return 0


def cmd_compare(args: argparse.Namespace, err: Console) -> int:
    from harness._results import gate, gate_report

    match = {}
    for pair in args.match or ():
        base_run, eq, cand_run = pair.partition("=")
        if not eq or not base_run or not cand_run:
            raise BadInputError(f"--match {pair}: write BASELINE_RUN=CANDIDATE_RUN (--match fine_tune_cot=logit_kd)")
        match[base_run] = cand_run
    found = gate.compare_folders(Path(args.baseline), Path(args.candidate), args.max_drop, args.z, args.tasks,
                                 args.method, args.allow_different_settings, match)
    title = gate.title(args.max_drop, args.z)
    about = gate.sides(Path(args.baseline), Path(args.candidate), found)
    stdout_console().print(gate_report.rich_table(found, title))
    for line in about:
        err.print(line, markup=False)
    if args.report:
        write_output(Path(args.report), gate_report.render(Path(args.report), found, title, about), "--report")
        err.print(f"report: {args.report}", markup=False)
    bad = [c for c in found if c.regression]
    if bad:
        err.print(f"{len(bad)} regression{'s' if len(bad) != 1 else ''}: " + ", ".join(c.key for c in bad))
        return 1
    print(f"no regression in {len(found)} result{'s' if len(found) != 1 else ''}")
    return 0


def cmd_export(args: argparse.Namespace, err: Console) -> int:
    from harness._run.export import export, push

    run = Path(args.run)
    out = Path(args.out) if args.out else run / "export"
    counts = export(run, out)
    print(f"wrote {out}/ (data.parquet, dataset/, README.md): {counts['rationales']:,} rationales for "
          f"{counts['questions']:,} questions, {counts['pass_filter']:,} pass the filter")
    if args.push:
        manifest = json.loads((run / "manifest.json").read_text())
        repo = push(out, manifest.get("recipe_resolved", {}), manifest.get("recipe_name", run.name))
        print(f"pushed to the Hub: datasets/{repo}")
    return 0


def cmd_new_plugin(args: argparse.Namespace, err: Console) -> int:
    from harness._scaffold import new_plugin

    root = new_plugin(args.name, args.kind, Path(args.dir))
    where = root if root.is_absolute() or str(root).startswith(".") else Path(".") / root
    shown = where.as_posix() if where.is_absolute() else f"./{where.as_posix()}"
    print(f"wrote {shown}/ (pyproject.toml, {root.name.replace('-', '_')}/__init__.py, tests/, README.md)\n"
          f"install and test it: pip install {shown} && pytest {shown}/tests")
    return 0


def parser() -> argparse.ArgumentParser:
    from harness._results.gate import METHODS
    from harness._results.rows import SORTS
    from harness._results.views import DEFAULT_VIEW, FORMATS, VIEWS

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
    run.add_argument("--wait", action="store_true",
                     help="if another harness run holds this run folder, wait for it to finish instead of stopping")
    run.set_defaults(func=cmd_run)

    train = sub.add_parser("train", help="join a training on several nodes (training.nodes): node 0 runs "
                                          "`harness run`, every other node this")
    with_recipe(train)
    train.add_argument("--node-rank", type=int, default=None,
                       help="this node's rank, 1..nodes-1 (default: $SLURM_NODEID; 0 runs the whole recipe)")
    train.add_argument("--wait", type=float, default=3600.0,
                       help="seconds to wait for node 0's data stages (default: 3600)")
    train.set_defaults(func=cmd_train)

    validate = sub.add_parser("validate", help="check a recipe and resolve its components without running")
    with_recipe(validate)
    validate.add_argument("--no-load-checks", action="store_true",
                          help="check the recipe only, not that its models and tokenizers load (e.g. in CI without "
                               "the hub models it names)")
    validate.set_defaults(func=cmd_validate)

    estimate = sub.add_parser("estimate", help="the teacher bill before running: requests, tokens, cost (minus "
                                               "what the cache holds)")
    with_recipe(estimate)
    estimate.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    estimate.set_defaults(func=cmd_estimate)

    plugins = sub.add_parser("plugins", help="list the registered components and their plugins")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(func=cmd_plugins)

    tasks = sub.add_parser("tasks", help="list tasks with their split sizes and where their data comes from")
    tasks.add_argument("--data-dir", help="local data folder (default: $HARNESS_DATA_DIR)")
    tasks.add_argument("--json", action="store_true", help="print JSON")
    tasks.set_defaults(func=cmd_tasks)

    def with_results(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("dir", nargs="?", default="results", help="results folder or file (default: results)")
        for field in ("task", "strategy", "student", "teacher"):
            sp.add_argument(f"--{field}", help=f"only rows whose {field} contains this text")
        sp.add_argument("--sort", choices=tuple(SORTS), default="task")
        sp.add_argument("--reference", action="store_true", help="add the Fine-tune-CoT paper's numbers")
        sp.add_argument("--all", action="store_true", help="every result, not only the newest per run and task")

    board = sub.add_parser("leaderboard", help="a table of all results (filter, sort, several formats)")
    with_results(board)
    board.add_argument("--format", choices=FORMATS, default="table")
    board.add_argument("--view", choices=tuple(VIEWS), default=DEFAULT_VIEW,
                       help="; ".join(f"{v.name}: {v.help}" for v in VIEWS.values()))
    board.set_defaults(func=cmd_leaderboard)

    plot = sub.add_parser("plot", help="plots, one panel per task: accuracy vs student size, vs diverse samples, "
                                       "vs teacher cost; teacher vs student")
    with_results(plot)
    plot.add_argument("--out", default="plots", help="folder for the image files (default: plots)")
    plot.add_argument("--image-format", choices=("png", "svg"), default="png")
    plot.set_defaults(func=cmd_plot)

    comp = sub.add_parser(
        "compare", help="compare candidate results with a baseline; exit 1 on a regression",
        description="Each side may hold several seeds of a run (results of runs with different run.seed): the "
                    "noise band is then the measured spread between seeds (Student's t). With one seed each and "
                    "lm-eval's per-sample files, questions are paired; else binomial standard errors are used.")
    comp.add_argument("baseline", help="baseline results folder or file")
    comp.add_argument("candidate", help="candidate results folder or file")
    comp.add_argument("--max-drop", type=float, default=0.02, help="largest tolerated accuracy drop (0.02 = 2 points)")
    comp.add_argument("--z", type=float, default=1.96,
                      help="a drop must also exceed this many combined standard errors (0: ignore noise)")
    comp.add_argument("--tasks", nargs="+", help="only these tasks")
    comp.add_argument("--allow-different-settings", action="store_true",
                      help="compare results evaluated with different settings (samples, temperature, backend, "
                           "dtype, max_gen_toks), which is refused otherwise")
    comp.add_argument("--method", choices=METHODS, default="auto",
                      help="how the noise band is measured (auto: seeds when there are several, else paired "
                           "questions, else binomial stderr)")
    comp.add_argument("--match", action="append", metavar="BASE_RUN=CAND_RUN",
                      help="compare a baseline run with a candidate run of another name (repeatable), e.g. "
                           "--match fine_tune_cot=logit_kd; runs of the same name and task pair by themselves")
    comp.add_argument("--report", metavar="FILE",
                      help="also write the comparison as Markdown (FILE.md) or a small HTML page (FILE.html)")
    comp.set_defaults(func=cmd_compare)

    exp = sub.add_parser("export", help="a run's teacher rationales as a dataset (Parquet, a datasets folder, a "
                                        "dataset card); --push sends it to the Hub")
    exp.add_argument("run", help="the run folder (runs/<recipe name>)")
    exp.add_argument("--out", help="where to write (default: RUN/export)")
    exp.add_argument("--push", action="store_true",
                     help="push to <org>/<recipe name>-rationales on the Hub, with the recipe's hub sink settings")
    exp.set_defaults(func=cmd_export)

    new = sub.add_parser(
        "new-plugin", help="write a plugin package skeleton (pyproject, module, passing test)",
        description="Write DIR/harness-NAME/: pyproject.toml (the harness entry point and the supported harness "
                    "versions), harness_NAME/__init__.py (a working KIND registered as NAME, subclassing the "
                    "harness base class), tests/test_NAME.py (passes installed or not) and README.md. Then: "
                    "pip install ./harness-NAME && pytest harness-NAME/tests")
    new.add_argument("name", help="the component's name (lowercase, digits, _)")
    new.add_argument("--kind", required=True, choices=("strategy", "teacher", "student", "task", "sink"))
    new.add_argument("--dir", default=".", help="parent folder (default: .)")
    new.set_defaults(func=cmd_new_plugin)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # The harness draws its own progress bars; the libraries' tqdm bars would interleave with them.
    os.environ.setdefault("TQDM_DISABLE", "1")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # argparse: 2 for a usage error, 0 for --help
        return int(exc.code or 0)
    terminated = stop_on_sigterm()
    try:
        return args.func(args, err)
    except RecipeError as exc:
        for problem in exc.problems:
            err.print(f"error: {redact(problem)}", markup=False)
        n = len(exc.problems)
        err.print(f"{n} problem{'s' if n != 1 else ''} found", markup=False)
        return exc.exit_code
    except HarnessError as exc:
        err.print(f"error: {redact(exc.message)}", markup=False)
        if not isinstance(exc, BadInputError):
            err.print("finished stages are kept; run the same command again to resume", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        what = "terminated" if terminated.get("signal") else "interrupted"
        err.print(f"{what}; finished stages are kept; run the same command again to resume", markup=False)
        return 143 if terminated.get("signal") else 130
    except Exception as exc:  # a bug in the harness or a plugin: the traceback, with any secret the run knows masked
        problem = write_failure(exc) or http_failure(exc)
        if problem:  # the environment, not a bug: one line naming the path or endpoint and the fix
            err.print(f"error: {redact(problem)}", markup=False)
            err.print("finished stages are kept; run the same command again to resume", markup=False)
            return 2
        sys.stderr.write(redact(traceback.format_exc()))
        return 1
    finally:
        if "previous" in terminated:
            signal.signal(signal.SIGTERM, terminated["previous"])


def entry() -> None:
    """The ``harness`` command. ``harness run`` runs in a watched child process, so that a run the kernel kills
    (out of memory) still ends with a message naming the stage and the knob to turn."""
    from harness._run.supervise import SUPERVISED_ENV, supervise

    argv = sys.argv[1:]
    if argv[:1] == ["run"] and not os.environ.get(SUPERVISED_ENV) and sys.platform == "linux":
        sys.exit(supervise(argv, Console(stderr=True, highlight=False, soft_wrap=True)))
    _exit(main(argv))


def _exit(code: int) -> None:
    """Leave with ``code``. After a SIGTERM (143) the run has unwound (servers stopped, stages kept) and leaves at
    once: the interpreter's shutdown would wait for requests still in flight in other threads and could end the
    process by another signal than the one the scheduler sent."""
    if code == 143:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())
