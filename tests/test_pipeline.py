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
    from harness import pipeline
    from harness.cli import main

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_lm_eval", crash)
    assert main(["run", str(recipe), *NATURAL, "--set", "evaluation.limit=3"]) == 130
    assert list((tmp_path / "runs" / "tiny").glob("*.partial")) == [tmp_path / "runs" / "tiny" /
                                                                      "evaluate-vanilla.partial"]
    monkeypatch.undo()
    assert main(["run", str(recipe), *NATURAL, "--set", "evaluation.limit=3"]) == 0
    assert ran(tmp_path) == ["evaluate-vanilla", "publish-vanilla", "evaluate-fine_tune_cot",
                             "publish-fine_tune_cot"]
    assert list((tmp_path / "runs" / "tiny").glob("*.partial")) == []
