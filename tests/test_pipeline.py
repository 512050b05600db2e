"""End to end: `harness run` on a tiny recipe, resume, and re-running exactly what a change touches."""

import json
from pathlib import Path

import pytest

STAGES = ["task", "teach", "filter", "build-vanilla", "train-vanilla", "evaluate-vanilla", "publish-vanilla",
          "build-fine_tune_cot", "train-fine_tune_cot", "evaluate-fine_tune_cot", "publish-fine_tune_cot"]


NATURAL = ["--set", "evaluation.limit=5", "--set", "strategy.1.format=natural"]  # the state the tests below leave


def manifest(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "runs" / "tiny" / "manifest.json").read_text())


def ran(tmp_path: Path) -> list[str]:
    """Stages that did work (were not skipped) in the last run."""
    return [s for s, e in manifest(tmp_path)["stages"].items() if not e["skipped_last_run"]]


def results_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "results").rglob("results_*.json"))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, request):
    """One real run of the tiny recipe, shared by the tests below (each copies nothing; they re-run on it)."""
    from .conftest import TINY

    tmp_path = tmp_path_factory.mktemp("e2e")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY.replace("[run]\n", f'[run]\noutput_dir = "{tmp_path / "runs"}"\n', 1)
                      + f'\n[[sink]]\nkind = "local"\ndir = "{tmp_path / "results"}"\n')
    from harness.cli import main

    code = main(["run", str(recipe)])
    return tmp_path, recipe, code


def test_first_run_does_every_stage_and_writes_lm_eval_results(first_run):
    tmp_path, recipe, code = first_run
    assert code == 0
    assert ran(tmp_path) == STAGES
    m = manifest(tmp_path)
    assert m["recipe_hash"] and m["versions"]["lm_eval"] and m["versions"]["transformers"]
    assert {p["name"] for p in m["plugins"]} >= {"program", "vanilla", "fine_tune_cot"}
    for stage in STAGES:
        assert (tmp_path / "runs" / "tiny" / stage / "done.json").exists()
        assert m["stages"][stage]["seconds"] >= 0 and m["stages"][stage]["peak_rss_mb"] > 0
    files = results_files(tmp_path)
    assert [f.parent.name for f in files] == ["tiny__fine_tune_cot", "tiny__vanilla"]
    data = json.loads(files[0].read_text())
    # lm-eval's schema, plus the harness's provenance under its own key
    for key in ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config", "date"):
        assert key in data
    task = "harness_tiny_fine_tune_cot"
    assert set(data["results"][task]) >= {"acc,none", "acc_stderr,none", "contains_answer,none",
                                          "correct_format,none"}
    assert data["n-samples"][task]["effective"] == 12
    assert data["harness"]["strategy"]["kind"] == "fine_tune_cot"
    assert data["harness"]["student_parameters"] > 0
    samples = sorted(files[0].parent.glob(f"samples_{task}_*.jsonl"))
    lines = samples[0].read_text().splitlines()
    assert len(lines) == 12 and json.loads(lines[0])["doc"]["prompt"].endswith(" ###")
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert set(summary) == {"vanilla", "fine_tune_cot"}
    assert summary["vanilla"]["acc"] == data_acc(tmp_path, "vanilla")


def data_acc(tmp_path, run):
    (f,) = [f for f in results_files(tmp_path) if f.parent.name == f"tiny__{run}"][:1]
    return json.loads(f.read_text())["results"][f"harness_tiny_{run}"]["acc,none"]


def test_rerun_does_nothing_again(first_run):
    tmp_path, recipe, _ = first_run
    from harness.cli import main

    before = results_files(tmp_path)
    assert main(["run", str(recipe)]) == 0
    assert ran(tmp_path) == []
    assert results_files(tmp_path) == before


def test_changing_a_field_reruns_exactly_its_dependents(first_run):
    tmp_path, recipe, _ = first_run
    from harness.cli import main

    assert main(["run", str(recipe), "--set", "evaluation.limit=5"]) == 0
    assert ran(tmp_path) == ["evaluate-vanilla", "publish-vanilla", "evaluate-fine_tune_cot",
                             "publish-fine_tune_cot"]
    assert main(["run", str(recipe), "--set", "evaluation.limit=5", "--set", "strategy.1.format=natural"]) == 0
    assert ran(tmp_path) == ["build-fine_tune_cot", "train-fine_tune_cot", "evaluate-fine_tune_cot",
                             "publish-fine_tune_cot"]
    # published results are never overwritten: each new evaluation adds its own file
    assert len(results_files(tmp_path)) == 2 + 2 + 1


def test_from_stage_reruns_that_stage_and_later(first_run):
    tmp_path, recipe, _ = first_run
    from harness.cli import main

    assert main(["run", str(recipe), *NATURAL, "--from", "evaluate"]) == 0
    assert ran(tmp_path) == ["evaluate-vanilla", "publish-vanilla", "evaluate-fine_tune_cot",
                             "publish-fine_tune_cot"]


def test_crashed_stage_leaves_finished_work_and_resumes(first_run, monkeypatch):
    tmp_path, recipe, _ = first_run
    from harness._evaluation import evaluate
    from harness.cli import main

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "run_lm_eval", crash)
    assert main(["run", str(recipe), *NATURAL, "--set", "evaluation.limit=3"]) == 130
    assert list((tmp_path / "runs" / "tiny").glob("*.partial")) == [tmp_path / "runs" / "tiny" /
                                                                      "evaluate-vanilla.partial"]
    monkeypatch.undo()
    assert main(["run", str(recipe), *NATURAL, "--set", "evaluation.limit=3"]) == 0
    assert ran(tmp_path) == ["evaluate-vanilla", "publish-vanilla", "evaluate-fine_tune_cot",
                             "publish-fine_tune_cot"]
    assert list((tmp_path / "runs" / "tiny").glob("*.partial")) == []


def test_observer_hooks_see_every_stage(first_run):
    tmp_path, recipe, _ = first_run
    from rich.console import Console

    from harness import hookimpl
    from harness._run.pipeline import Pipeline
    from harness._run.recipe import load_recipe
    from harness._run.registry import load_registry
    from harness._run.ui import UI

    events = []

    class Observer:
        @hookimpl
        def on_run_start(self, run_dir, recipe):
            events.append(("start", run_dir.name))

        @hookimpl
        def on_stage_end(self, stage, summary, seconds, skipped):
            events.append((stage, skipped))

        @hookimpl
        def on_run_end(self, run_dir, results):
            events.append(("end", sorted(results)))

    from harness.cli import main

    state = [*NATURAL, "--set", "evaluation.limit=3"]
    assert main(["run", str(recipe), *state]) == 0  # every stage current for this state
    registry = load_registry([Observer()])
    quiet = UI(Console(file=open("/dev/null", "w")), Console(file=open("/dev/null", "w")))
    Pipeline(load_recipe(recipe, registry, state[1::2]), registry, quiet).run()
    assert events[0] == ("start", "tiny") and events[-1] == ("end", ["fine_tune_cot", "vanilla"])
    assert [e for e in events[1:-1]] == [(s, True) for s in STAGES]


def test_failure_during_a_run_exits_1_and_keeps_finished_stages(tmp_path, tiny_recipe, cli):
    result = cli("run", tiny_recipe, "--set", "teacher.error_rate=1.0", "--set", "training.max_steps=2",
                 "--set", "evaluation.limit=2")
    assert result.code == 1
    runs = tmp_path / "runs" / "tiny"
    assert (f"error: strategy 'fine_tune_cot' built no training examples (did the filter drop everything? see "
            f"{runs / 'filter' / 'teacher_report.json'})\n") in result.err
    assert result.err.endswith("finished stages are kept; run the same command again to resume\n")
    assert "0/300 rationales pass the filter, 300 questions have none" in result.err
    assert (runs / "publish-vanilla" / "done.json").exists()  # vanilla needs no teacher output and finished


def test_two_students_side_by_side(tmp_path, tiny_recipe, cli):
    text = tiny_recipe.read_text().replace('[[strategy]]\nkind = "fine_tune_cot"\n', "")
    text = text.replace("[[student]]\n", '[[student]]\nname = "wide"\n', 1)
    text += ('\n[[student]]\nname = "deep"\nkind = "transformers"\ntokenizer = "word"\narchitecture = '
             '{ model_type = "gpt2", n_layer = 2, n_embd = 16, n_head = 2, n_positions = 128 }\n')
    tiny_recipe.write_text(text)
    result = cli("run", tiny_recipe, "--set", "training.max_steps=2", "--set", "evaluation.limit=2")
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert sorted(summary) == ["vanilla+deep", "vanilla+wide"]
    assert "teach" not in json.loads((tmp_path / "runs" / "tiny" / "manifest.json").read_text())["stages"]
    assert "vanilla+deep" in result.out and "vanilla+wide" in result.out
    # piped (not a terminal): the summary lines only, one after another, no progress bars and no blank lines
    lines = result.err.splitlines()
    assert "" not in lines[1:] and all(line.startswith(("✓ ", "• ", "  ")) for line in lines[1:]), result.err


def test_a_strategy_starts_from_an_earlier_strategy_trained_student(tmp_path, tiny_recipe, cli):
    """init_from: the second strategy trains on top of the first one's model (GKD's supervised-then-on-policy
    recipe); its key follows the first's training, and a name that is not an earlier strategy is refused."""
    text = tiny_recipe.read_text().replace('[[strategy]]\nkind = "fine_tune_cot"\n',
                                           '[[strategy]]\nkind = "fine_tune_cot"\n\n[[strategy]]\nkind = "fine_tune_cot"'
                                           '\nname = "warm"\ninit_from = "fine_tune_cot"\n')
    tiny_recipe.write_text(text)
    args = ("--set", "training.max_steps=4", "--set", "training.logging_steps=1", "--set", "evaluation.limit=2")
    result = cli("run", tiny_recipe, *args)
    assert result.code == 0, result.err
    runs = tmp_path / "runs" / "tiny"
    warm = json.loads((runs / "train-warm" / "done.json").read_text())["record"]
    assert warm["initialized_from"] == str(runs / "train-fine_tune_cot" / "model")
    # the same data and steps, but from a trained model: it starts (and ends) lower
    cold = json.loads((runs / "train-fine_tune_cot" / "train.json").read_text())["losses"]
    first_warm = json.loads((runs / "train-warm" / "train.json").read_text())["losses"][0]
    assert first_warm < cold[0] and abs(first_warm - cold[-1]) < abs(first_warm - cold[0])  # goes on from there
    # training the first one differently trains the second again
    again = cli("run", tiny_recipe, *args, "--set", "strategy[1].max_samples=1")
    assert again.code == 0, again.err
    assert "up to date" not in next(x for x in again.err.splitlines() if x[2:].startswith("train warm "))
    # refused before anything runs: a later strategy, or itself
    tiny_recipe.write_text(text.replace('init_from = "fine_tune_cot"', 'init_from = "warm"'))
    bad = cli("validate", tiny_recipe)
    assert bad.code == 2
    assert ("strategy[2].init_from: 'warm' is not an earlier strategy of this recipe; it starts from another "
            "strategy's trained student, so name one listed above it: 'vanilla', 'fine_tune_cot'") in bad.err


def test_observer_that_raises_is_named_and_the_run_goes_on(first_run, capsys):
    tmp_path, recipe, _ = first_run
    from rich.console import Console

    from harness import hookimpl
    from harness._run.pipeline import Pipeline
    from harness._run.recipe import load_recipe
    from harness._run.registry import load_registry
    from harness._run.ui import UI

    class Broken:
        @hookimpl
        def on_stage_end(self, stage, summary, seconds, skipped):
            raise ValueError("observer bug")

    registry = load_registry([Broken()])
    console = Console(file=open("/dev/null", "w"))
    warnings = Console(record=True, width=300)
    from harness.cli import main

    state = [*NATURAL, "--set", "evaluation.limit=3"]
    assert main(["run", str(recipe), *state]) == 0
    results = Pipeline(load_recipe(recipe, registry, state[1::2]), registry, UI(warnings, console)).run()
    assert set(results) == {"vanilla", "fine_tune_cot"}
    assert "warning: plugin 'Broken' failed in hook on_stage_end: ValueError: observer bug" in warnings.export_text()


def test_the_train_key_covers_what_shapes_the_model():
    from harness._run.keys import training_key
    from harness.types import TrainingSettings

    plain = TrainingSettings()
    assert training_key(plain, 32) == training_key(plain, 64)  # generation length: evaluation only
    assert training_key(plain) == training_key(TrainingSettings(threads=1, logging_steps=3))  # operational
    selecting = TrainingSettings(select_every=10)
    assert training_key(selecting, 32) != training_key(selecting, 64)  # model selection generates with it


def test_a_second_run_of_the_same_recipe_at_once_is_refused(tmp_path, tiny_recipe, cli):
    """Two runs of one recipe at the same time would pay the teacher twice and trip over each other's partial
    stage folders: the second is refused at once, naming the first."""
    from harness._run.rundir import RunDir

    with RunDir(tmp_path / "runs" / "tiny").lock():  # as a first run holds it
        second = cli("run", tiny_recipe, "--set", "training.max_steps=2", "--set", "evaluation.limit=2")
    assert second.code == 2
    assert "another harness run is using this run folder (pid " in second.err
    assert not (tmp_path / "runs" / "tiny" / "task").exists()  # nothing started
    after = cli("run", tiny_recipe, "--set", "training.max_steps=2", "--set", "evaluation.limit=2")
    assert after.code == 0, after.err  # released: the next run goes ahead


def test_a_folder_that_cannot_be_written_is_a_message_not_a_traceback(tmp_path, tiny_recipe, cli):
    """A sink folder under a file (as a read-only or full disk would fail a write): the run stops with the path
    named and its finished stages kept."""
    (tmp_path / "afile").write_text("not a folder")
    text = tiny_recipe.read_text()
    tiny_recipe.write_text(text.replace(f'dir = "{tmp_path / "results"}"', f'dir = "{tmp_path / "afile" / "sub"}"'))
    result = cli("run", tiny_recipe, "--set", "training.max_steps=2", "--set", "evaluation.limit=2")
    assert result.code == 2 and "Traceback" not in result.err
    assert f"error: cannot write {tmp_path / 'afile' / 'sub'}" in result.err and "Not a directory" in result.err
    assert "finished stages are kept" in result.err
    assert (tmp_path / "runs" / "tiny" / "evaluate-vanilla" / "done.json").exists()  # the first to publish


def test_run_wait_waits_for_the_run_holding_the_folder(tmp_path, tiny_recipe, cli):
    import threading
    import time

    from harness._run.rundir import RunDir

    held, release = threading.Event(), threading.Event()

    def first_run():
        with RunDir(tmp_path / "runs" / "tiny").lock():
            held.set()
            release.wait(30)

    holder = threading.Thread(target=first_run)
    holder.start()
    held.wait(10)
    threading.Timer(2.0, release.set).start()
    started = time.monotonic()
    result = cli("run", tiny_recipe, "--wait", "--set", "training.max_steps=2", "--set", "evaluation.limit=2")
    holder.join()
    assert result.code == 0, result.err
    assert time.monotonic() - started >= 2.0 and "waiting for the harness run that holds" in result.err
