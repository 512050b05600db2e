"""``harness run``: the stages of a recipe, top to bottom.

task -> teach -> filter -> build (per strategy) -> train, evaluate, publish (per strategy x student).

Every stage has a key (``harness._run.keys.Keys``: a hash of the recipe fields it reads and of the keys of the
stages it reads from). A stage whose finished output carries the same key is skipped, so re-running a recipe does
no work again and changing a field re-runs exactly the stages that depend on it. A teach stage with failed
requests is never finished: the next run asks only those again.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness import io
from harness._evaluation.evaluate import evaluate_student
from harness._evaluation.lm_eval_task import task_name
from harness._evaluation.selection import Validator, selection_validator
from harness._run import rundir, stages, task_stage
from harness._run.assembly import Assembly, assemble, bound_objective
from harness._run.keys import Keys
from harness._run.memory import peak_memory, reset_peak_memory
from harness._run.provenance import provenance
from harness._run.recipe import ComponentSpec, Recipe
from harness._run.registry import Registry
from harness._run.rundir import RunDir
from harness._run.supervise import check_memory, forget_kill, note_stage
from harness._run.ui import UI
from harness._run.workers import workers
from harness.components import Objective, Strategy, Student, Task, Teacher
from harness.errors import BadInputError, RecipeError, RunError, is_out_of_memory
from harness.records import TRAINING, RecordTable, TextView
from harness.types import Example, TrainingContext, TrainingExample, TrainingSettings

STAGES = ("task", "teach", "filter", "build", "train", "evaluate", "publish")


class Pipeline:
    def __init__(self, recipe: Recipe, registry: Registry, ui: UI | None = None, force: bool = False,
                 from_stage: str | None = None, node_rank: int = 0, wait: float = 3600.0,
                 wait_for_lock: bool = False):
        """``node_rank`` > 0: this process is another node of a multi-node training (``harness train``): it
        waits for node 0's stages instead of running them, takes part in each train stage, and commits nothing."""
        if from_stage is not None and from_stage not in STAGES:
            raise BadInputError(f"--from: unknown stage '{from_stage}'; stages: {', '.join(STAGES)}")
        self.recipe = recipe
        self.registry = registry
        self.ui = ui or UI()
        self.force_from = 0 if force else (STAGES.index(from_stage) if from_stage else len(STAGES))
        self.rundir = RunDir(Path(recipe.run.output_dir) / recipe.name)
        self.hook = registry.manager.hook if registry.manager else None
        self.keys = Keys(recipe)
        self.node_rank, self.wait, self.wait_for_lock = node_rank, wait, wait_for_lock

    # The recipe, top to bottom ------------------------------------------------------------------------------

    def run(self) -> dict[str, dict[str, Any]]:
        """Every stage the recipe needs, with the run folder held for this run alone (another ``harness run`` of
        the same recipe at the same time is refused: it would pay the teacher for the same questions again)."""
        if self.node_rank:  # another node joins node 0's run: it writes no stage of its own
            return self._run()
        with self.rundir.lock(wait=self.wait_for_lock, note=self.ui.note):
            return self._run()

    def _run(self) -> dict[str, dict[str, Any]]:
        r = self.recipe
        parts: Assembly = assemble(r, self.registry)
        problems = parts.problems()
        if problems:  # before any stage: nothing is paid for a run that would fail later
            raise RecipeError(problems)
        self.teacher, self.sinks = parts.teacher, parts.sinks
        teacher, task, students, strategies = parts.teacher, parts.task, parts.students, parts.strategies
        if not self.node_rank:  # node 0 keeps the run folder's records
            self._start_manifest()
        self._notify("on_run_start", run_dir=self.rundir.root, recipe=r)

        task_key = self.keys.task()
        splits = self.load_task(task, task_key)

        for strategy in strategies.values():
            strategy.setup(task)
        graded: Path | None = None
        filter_key = None
        if any(s.uses_teacher for s in strategies.values()):
            teach_key = self.keys.teach(task_key)
            teach_digest = self.teach(teacher, task, splits["train"], teach_key)
            filter_key = self.keys.filter(teach_key, teach_digest)
            graded = self.grade(task, splits["train"], filter_key)

        results: dict[str, dict[str, Any]] = {}
        trained: dict[tuple[str, str], tuple[dict[str, Path], list[str]]] = {}  # (strategy, student): models, keys
        for spec in r.strategies:
            strategy = strategies[spec.name]
            upstream = filter_key if strategy.uses_teacher else task_key
            build_key = self.keys.build(upstream, spec)
            train_rows = self.build(spec.name, strategy, task, splits["train"], graded if strategy.uses_teacher
                                    else None, build_key)
            for student_spec in r.students:
                run_name = spec.name if len(r.students) == 1 else f"{spec.name}+{student_spec.name}"
                student = students[student_spec.name]
                init = None
                if spec.init_from:  # start from an earlier strategy's trained student (same student)
                    before_dirs, before_keys = trained[(spec.init_from, student_spec.name)]
                    if len(before_dirs) != 1 or len(list(strategy.roles())) != 1:
                        raise BadInputError(f"{r.path}: strategy.init_from: '{spec.name}' starts from "
                                            f"'{spec.init_from}', which needs both to train one model (no roles)")
                    init = (next(iter(before_dirs.values())), before_keys[0])
                model_dirs, train_keys = self.train_roles(run_name, strategy, spec, student, student_spec,
                                                          train_rows, build_key, task, splits, init)
                trained[(spec.name, student_spec.name)] = (model_dirs, train_keys)
                if self.node_rank:  # another node: training was its part
                    continue
                eval_key = self.keys.evaluate(train_keys, task_key, spec)
                metrics, eval_dir = self.evaluate(run_name, student, model_dirs, strategy, task, splits, eval_key)
                self.publish(run_name, eval_key, eval_dir, [p.parent.name for p in model_dirs.values()],
                             strategy.uses_teacher, task)
                results[run_name] = {"strategy": spec.name, "student": student_spec.name, **metrics}

        if self.node_rank:
            self.ui.note(f"node {self.node_rank}: took part in every training stage; node 0 evaluates and publishes")
            return results
        io.atomic_write_json(self.rundir.root / "summary.json", results)
        self.ui.out.print(self.ui.results_table(
            f"{r.name}: {r.evaluation.split} accuracy ({r.task.kind})", results))
        self._notify("on_run_end", run_dir=self.rundir.root, results=results)
        return results

    # Stages -------------------------------------------------------------------------------------------------

    def load_task(self, task: Task, key: str) -> dict[str, RecordTable[Example]]:
        def work(out: Path, progress) -> tuple[list[str], dict]:
            return task_stage.write_splits(task, self.recipe.task.kind, out, self.recipe.run.workers)

        return task_stage.split_paths(self._stage("task", "task", key, None, work))

    def teach(self, teacher: Teacher, task: Task, train: RecordTable[Example], key: str) -> str:
        """Ask the teacher; return a digest of what it answered, so that later stages re-run when a re-run of
        this stage filled in failed requests. A teach stage with failed requests is not finished: the next run
        asks only those again (the others come from the teacher's cache)."""

        def work(out: Path, progress) -> tuple[list[str], dict]:
            try:
                return stages.teach(teacher, self.recipe.teacher.kind, task, train, out, progress,
                                    workers(self.recipe.run.workers, len(train)))
            finally:
                teacher.close()  # a server it started for the chunks is stopped

        self._stage("teach", f"teach ({self.recipe.teacher.kind})", key, len(train), work)
        return (self.rundir.done("teach") or {}).get("record", {}).get("digest", "")

    def grade(self, task: Task, train: RecordTable[Example], key: str) -> Path:
        """The correctness filter's verdicts: every teacher answer cleansed and compared with the gold answer."""

        def work(out: Path, progress) -> tuple[list[str], dict]:
            return stages.grade(task, train, self.rundir.path("teach"), out, progress,
                                workers(self.recipe.run.workers, len(train)))

        return self._stage("filter", "filter (grade teacher)", key, len(train), work)

    def build(self, name: str, strategy: Strategy, task: Task, train: RecordTable[Example],
              graded: Path | None, key: str) -> RecordTable[TrainingExample]:
        """``graded``: the filter stage's folder (None for a strategy that uses no teacher)."""
        filter_dir = self.rundir.path("filter")

        def work(out: Path, progress) -> tuple[list[str], dict]:
            return stages.build(name, strategy, task, train, graded and self.rundir.path("teach"), filter_dir, out,
                                progress, workers(self.recipe.run.workers, len(train)))

        folder = self._stage(f"build-{name}", f"build {name}", key, len(train), work)
        return RecordTable(folder / "train.arrow", TRAINING)

    def train_roles(self, run_name: str, strategy: Strategy, strategy_spec: ComponentSpec, student: Student,
                    student_spec: ComponentSpec,
                    train_rows: list, build_key: str, task: Task | None = None,
                    splits: dict[str, list[Example]] | None = None,
                    init: tuple[Path, str] | None = None) -> tuple[dict[str, Path], list[str]]:
        """One model per role of the strategy (e.g. Socratic's decomposer and solver; most strategies have one).
        A token budget is shared by the roles' models as the strategy says (``budget_shares()``), else in
        proportion to their data."""
        roles = list(strategy.roles())
        model_dirs, keys = {}, []
        for role in roles:
            rows = io.LazyList(lambda role=role: [t for t in train_rows if t.role == role]) if len(roles) > 1 \
                else train_rows
            settings = self.recipe.training
            if settings.max_tokens and len(roles) > 1:
                total_chars = sum(len(t.text()) for t in train_rows) or 1
                shares = (strategy.budget_shares() or {r: sum(len(t.text()) for t in train_rows if t.role == r)
                                                       / total_chars for r in roles})
                settings = replace(settings, max_tokens=max(1, round(settings.max_tokens * shares[role])))
            key = self.keys.train(build_key, role, student_spec, settings, init[1] if init else None)
            validate = selection_validator(settings, self.recipe.evaluation, strategy, task,
                                           (splits or {}).get("validation"), roles) if settings.select_every else None
            objective, source = bound_objective(strategy, self.teacher, self.recipe, strategy_spec)
            try:
                model_dirs[role] = self.train(f"{run_name}-{role}" if len(roles) > 1 else run_name, student, rows,
                                              key, settings, validate, objective, source, init[0] if init else None)
            finally:
                if objective is not None:
                    objective.close()
            keys.append(key)
        return model_dirs, keys

    def train(self, run_name: str, student: Student, rows: list, key: str, settings: TrainingSettings,
              validate: Validator | None = None, objective: Objective | None = None,
              objective_source: dict | None = None, init_dir: Path | None = None) -> Path:
        stage = f"train-{run_name}"
        # Checkpoints live outside the stage folder (which restarts empty) so that a killed run resumes.
        checkpoints = self.rundir.root / "checkpoints" / f"{stage}-{key[:12]}"

        def work(out: Path, progress) -> tuple[str, dict]:
            corpus = TextView(rows)
            context = TrainingContext(checkpoint_dir=checkpoints if settings.checkpoint_steps else None,
                                      validate=validate, objective=objective, objective_source=objective_source,
                                      cache_dir=self.rundir.root / "cache", node_rank=self.node_rank,
                                      init_dir=init_dir)
            info = student.train(rows, settings, out / "model", corpus, progress, context=context)
            io.atomic_write_json(out / "train.json", info)
            summary = (f"{info.get('steps')} steps, loss {info.get('final_loss') or info.get('train_loss'):.3f}, "
                       f"{info.get('tokens_per_second') or 0:,.0f} tokens/s, {info.get('parameters', 0):,} params")
            return summary, {k: v for k, v in info.items() if k not in ("losses", "objective_log")}  # in train.json

        folder = self._stage(stage, f"train {run_name}", key, None if settings.max_tokens else settings.max_steps,
                             work)
        if checkpoints.exists() and not self.node_rank:  # the model is saved: its checkpoints are no longer needed
            shutil.rmtree(checkpoints, ignore_errors=True)
            with contextlib.suppress(OSError):
                checkpoints.parent.rmdir()  # only when no other stage's checkpoints are left
        return folder / "model"

    def evaluate(self, run_name: str, student: Student, model_dirs: dict[str, Path], strategy: Strategy,
                 task: Task, splits: dict[str, list[Example]], key: str) -> tuple[dict[str, Any], Path]:
        ev = self.recipe.evaluation
        if ev.split not in splits:
            raise RunError(f"evaluation.split: task has no split '{ev.split}' (it has {', '.join(splits)})")
        examples = splits[ev.split][: ev.limit] if ev.limit else splits[ev.split]
        name = task_name(self.recipe.name, run_name)
        # The lm-eval task lives outside the stage folder, at a path that stays valid, so that the stock
        # `lm_eval --include_path <task_dir>` can re-run it later.
        task_dir = self.rundir.root / "lm_eval_tasks" / name

        def work(out: Path, progress) -> tuple[str, dict]:
            try:
                metrics = evaluate_student(student, model_dirs, strategy, task, examples, ev, task_dir, name, out,
                                           self.recipe.run.seed, self.ui.note, progress)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                raise RunError(f"evaluation ran out of memory ({str(exc).splitlines()[0][:200]}). To fit: lower "
                               f"evaluation.batch_size (now {ev.batch_size}) or evaluation.max_gen_toks (now "
                               f"{strategy.max_gen_toks(ev.max_gen_toks)}); the trained model is kept") from None
            io.atomic_write_json(out / "metrics.json", metrics)
            summary = f"accuracy {100 * metrics['acc']:.1f}% on {len(examples)} {ev.split} examples"
            if ev.samples > 1:
                summary = (f"pass@1 {100 * metrics['acc']:.1f}% ± {100 * metrics['acc_stderr']:.1f}, "
                           f"maj@{ev.samples} {100 * metrics['maj']:.1f}% on {len(examples)} {ev.split} examples")
            return summary, metrics

        # the bar counts answers where the backend can tell (hf: batch by batch; a served model: elapsed time only)
        folder = self._stage(f"evaluate-{run_name}", f"evaluate {run_name}", key, len(examples) * ev.samples, work)
        return json.loads((folder / "metrics.json").read_text()), folder

    def publish(self, run_name: str, eval_key: str, eval_dir: Path, train_stages: list[str],
                uses_teacher: bool, task: Task) -> None:
        """Hand one evaluation's lm-eval files to every sink (once per evaluation: never re-published)."""
        r = self.recipe
        key = self.keys.publish(eval_key)

        def work(out: Path, progress) -> tuple[str, dict]:
            results_file = sorted((eval_dir / "lm_eval").rglob("results_*.json"))[-1]
            samples = sorted((eval_dir / "lm_eval").rglob("samples_*.jsonl"))
            records = [(self.rundir.done(stage) or {}).get("record", {}) for stage in train_stages]
            teacher_report = (self.rundir.done("filter") or {}).get("record", {}) if uses_teacher else {}
            usage = (self.rundir.done("teach") or {}).get("record", {}).get("usage", {}) if uses_teacher else {}
            evaluation = json.loads((eval_dir / "metrics.json").read_text()).get("evaluation")
            made = provenance(r, self.rundir.read_manifest(), run_name, eval_key, records, teacher_report, usage,
                              task.hub_dataset, evaluation)
            published = [p for sink in self.sinks for p in sink.publish(results_file, samples, made)]
            io.atomic_write_json(out / "published.json", published)
            where = sorted({str(Path(p).parent) for p in published})
            return f"to {', '.join(where) or 'nowhere'}", {"published": published}

        self._stage(f"publish-{run_name}", f"publish {run_name}", key, None, work)

    # Machinery ----------------------------------------------------------------------------------------------

    def _stage(self, stage: str, label: str, key: str, total: int | None,
               work: Callable[[Path, Callable[[int], None]], tuple[str | list[str], dict]]) -> Path:
        kind = stage.split("-", 1)[0]
        if self.node_rank:
            return self._join(stage, label, key, total, work)
        forced = STAGES.index(kind) >= self.force_from
        done = self.rundir.done(stage)
        finished = done is not None and done.get("key") == key and not done.get("record", {}).get("incomplete")
        if not forced and finished:
            self.ui.skipped(label, done.get("summary", ""))
            self._notify("on_stage_end", stage=stage, summary=done.get("summary", ""), seconds=0.0, skipped=True)
            self.rundir.update_manifest(stages={stage: {**self.rundir.read_manifest().get("stages", {}).get(
                stage, {}), "skipped_last_run": True}})
            return self.rundir.path(stage)
        check_memory(stage, key, self.rundir.root)
        self._notify("on_stage_start", stage=stage, key=key)
        note_stage(stage, self.rundir.root, key)
        out = self.rundir.begin(stage)
        reset_peak_memory()
        started = time.perf_counter()
        with self.ui.stage(label, total) as progress:
            summary, record = work(out, progress)
        parts = [summary] if isinstance(summary, str) else list(summary)
        summary = "; ".join(parts)
        seconds = time.perf_counter() - started
        entry = {"key": key, "summary": summary, "seconds": round(seconds, 2), **peak_memory(),
                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "skipped_last_run": False}
        folder = self.rundir.commit(stage, key, {**entry, "record": record})
        forget_kill(stage, self.rundir.root)
        self.rundir.update_manifest(stages={stage: entry})
        self.ui.done(label, parts, seconds)
        self._notify("on_stage_end", stage=stage, summary=summary, seconds=seconds, skipped=False)
        return folder

    def _join(self, stage: str, label: str, key: str, total: int | None,
              work: Callable[[Path, Callable[[int], None]], tuple[str | list[str], dict]]) -> Path:
        """Another node: a train stage is joined (its work run into a node-local folder, nothing committed); any
        other stage is node 0's, waited for until its output carries this key."""
        if stage.startswith("train-"):
            out = self.rundir.root / f"node-{self.node_rank}" / stage
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            with self.ui.stage(f"{label} (node {self.node_rank})", total) as progress:
                work(out, progress)
            self.ui.done(f"{label} (node {self.node_rank})", ["joined"], 0.0)
            return out
        deadline = time.monotonic() + self.wait
        with self.ui.stage(f"{label}: waiting for node 0", None):
            while (self.rundir.done(stage) or {}).get("key") != key:
                if time.monotonic() > deadline:
                    raise RunError(f"node {self.node_rank}: node 0 did not finish the {stage} stage of this recipe "
                                   f"within {self.wait:.0f} s; start `harness run` on node 0 with the same recipe "
                                   f"and --set options, on a shared run folder")
                time.sleep(1.0)
        return self.rundir.path(stage)

    def _notify(self, hook: str, **kwargs: Any) -> None:
        """Tell observer plugins; one that raises is named in a warning and the run goes on."""
        if self.hook is None:
            return
        for impl in getattr(self.hook, hook).get_hookimpls():
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames if k in kwargs})
            except Exception as exc:  # an observer must not take the run down
                self.ui.note(f"[yellow]warning:[/yellow] plugin '{impl.plugin_name}' failed in hook {hook}: "
                             f"{type(exc).__name__}: {exc}")

    def _start_manifest(self) -> None:
        r = self.recipe
        self.rundir.update_manifest(
            recipe=str(r.path), recipe_name=r.name, recipe_hash=r.digest(), recipe_resolved=r.plain(),
            versions=rundir.versions(), git_commit=rundir.git_commit(Path(__file__).resolve().parent),
            plugins=[{"kind": c.kind, "name": c.name, "plugin": c.plugin, "distribution": c.distribution,
                      "version": c.version} for c in self.registry.all()],
            components={"task": dict(r.task.code), "teacher": dict(r.teacher.code),
                        **{f"{kind}.{spec.name}": dict(spec.code) for kind, specs in
                           (("strategy", r.strategies), ("student", r.students), ("sink", r.sinks)) for spec in specs}},
            started=time.strftime("%Y-%m-%dT%H:%M:%S"))
