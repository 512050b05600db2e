"""The regression gate (`harness compare`): its noise band by seeds, by paired questions or by binomial errors,
its report, and that a planted regression fails it while an unchanged candidate passes."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from harness._results.gate import compare
from harness._results.rows import load

from .test_results import results_file


def with_samples(folder: Path, run: str, correct: list[int], seed: int, date: str) -> Path:
    """A results file plus lm-eval's per-sample file (one line per question, ``acc`` 0/1), for one seed."""
    acc = sum(correct) / len(correct)
    path = results_file(folder / f"s{seed}", run, acc, math.sqrt(acc * (1 - acc) / len(correct)), n=len(correct),
                        date=date)
    data = json.loads(path.read_text())
    data["harness"]["training"] = {"seed": seed}
    path.write_text(json.dumps(data))
    (path.parent / f"samples_harness_r_{run}_{date}.jsonl").write_text(
        "".join(json.dumps({"doc_id": i, "acc": float(c)}) + "\n" for i, c in enumerate(correct)))
    return path


def test_several_seeds_judge_by_the_spread_between_seeds(tmp_path):
    base_accs, cand_accs = [0.50, 0.54, 0.46, 0.52], [0.47, 0.49]
    for s, a in enumerate(base_accs):
        with_samples(tmp_path / "base", "ftc", [1] * int(a * 100) + [0] * (100 - int(a * 100)), s, f"b{s}")
    for s, a in enumerate(cand_accs):
        with_samples(tmp_path / "cand", "ftc", [1] * int(a * 100) + [0] * (100 - int(a * 100)), s + 10, f"c{s}")
    (c,) = compare(load(tmp_path / "base"), load(tmp_path / "cand"), 0.0, 1.645)
    ss = sum((a - statistics.fmean(base_accs)) ** 2 for a in base_accs) + sum(
        (a - statistics.fmean(cand_accs)) ** 2 for a in cand_accs)
    from scipy.stats import t

    band = t.ppf(statistics.NormalDist().cdf(1.645), 4) * math.sqrt(ss / 4) * math.sqrt(1 / 4 + 1 / 2)
    assert c.method == "seeds" and (c.baseline_seeds, c.candidate_seeds) == (4, 2)
    assert c.delta == pytest.approx(0.48 - 0.505) and c.noise == pytest.approx(band)
    assert c.verdict == "within noise" and not c.regression  # 2.5 points down, but seeds spread 3.4 points


def test_one_seed_each_pairs_the_questions(tmp_path):
    base = [1] * 60 + [0] * 40
    cand = [1] * 50 + [0] * 10 + [0] * 40  # ten questions lost, none gained
    with_samples(tmp_path / "base", "ftc", base, 0, "b")
    with_samples(tmp_path / "cand", "ftc", cand, 0, "c")
    (auto,) = compare(load(tmp_path / "base"), load(tmp_path / "cand"), 0.02, 1.96)
    assert auto.method == "stderr"  # by default: the paired test alarms more often on unchanged runs (measured)
    (c,) = compare(load(tmp_path / "base"), load(tmp_path / "cand"), 0.02, 1.96, method="paired")
    diffs = [x - y for x, y in zip(cand, base)]
    assert c.method == "paired" and (c.lost, c.gained) == (10, 0)
    assert c.noise == pytest.approx(1.96 * statistics.pstdev(diffs) / 10)
    # unpaired binomial errors would call a 10-point drop noise-sized (band 13.6 points); paired, it is not
    assert c.regression and c.verdict == "regression"
    assert 1.96 * math.sqrt(2 * 0.6 * 0.4 / 100) > 0.10 > c.noise


def test_the_report_gives_the_exit_codes_verdict(tmp_path, cli):
    base = [1] * 60 + [0] * 40
    with_samples(tmp_path / "base", "ftc", base, 0, "b")
    with_samples(tmp_path / "same", "ftc", base, 0, "s")
    with_samples(tmp_path / "worse", "ftc", [1] * 45 + [0] * 55, 0, "w")
    same = cli("compare", tmp_path / "base", tmp_path / "same", "--report", tmp_path / "same.md")
    worse = cli("compare", tmp_path / "base", tmp_path / "worse", "--report", tmp_path / "worse.md", "--method",
                "paired")
    html = cli("compare", tmp_path / "base", tmp_path / "worse", "--report", tmp_path / "worse.html")
    assert same.code == 0 and "No regression in 1 results (exit code 0)" in (tmp_path / "same.md").read_text()
    assert "| within noise |" in (tmp_path / "same.md").read_text()
    text = (tmp_path / "worse.md").read_text()
    assert worse.code == 1 and "**1 regression** in 1 results (exit code 1)" in text
    assert "| ftc/synthetic_arithmetic | 60.0 ± 4.9 | 45.0 ± 5.0 | -15.0 |" in text and "| REGRESSION |" in text
    assert "paired (15 lost, 0 gained)" in text
    assert html.code == 1 and "<table id='compare'>" in (tmp_path / "worse.html").read_text()


GATE = """[run]
name = "gate"
output_dir = "{out}/runs"

[task]
kind = "synthetic_arithmetic"
train_size = 600
validation_size = 0
test_size = 100
min_ops = 1
max_ops = 1

[teacher]
kind = "program"

[[strategy]]
kind = "fine_tune_cot"

[[student]]
kind = "transformers"
tokenizer = "word"
architecture = {{ model_type = "gpt2", n_layer = 2, n_embd = 64, n_head = 2, n_positions = 64 }}

[training]
max_steps = 400
batch_size = 32
learning_rate = 3e-3
threads = 1

[evaluation]
batch_size = 100
max_gen_toks = 16

[[sink]]
kind = "local"
dir = "{out}/results"
"""


@pytest.mark.slow
def test_a_planted_regression_fails_the_gate_and_an_unchanged_candidate_passes(tmp_path, cli):
    recipe = tmp_path / "gate.toml"
    recipe.write_text(GATE.format(out=tmp_path / "base"))
    assert cli("run", recipe).code == 0
    base = tmp_path / "base" / "results"
    (row,) = load(base)
    assert row.acc >= 0.2  # the baseline learned something a regression can take away
    unchanged = cli("run", recipe, "--set", f'run.output_dir="{tmp_path / "same" / "runs"}"',
                    "--set", f'sink.dir="{tmp_path / "same" / "results"}"')
    planted = cli("run", recipe, "--set", f'run.output_dir="{tmp_path / "bad" / "runs"}"',
                  "--set", f'sink.dir="{tmp_path / "bad" / "results"}"',
                  "--set", "training.max_steps=40")  # a tenth of the training
    assert unchanged.code == 0 and planted.code == 0
    assert cli("compare", base, tmp_path / "same" / "results").code == 0
    failed = cli("compare", base, tmp_path / "bad" / "results")
    assert failed.code == 1 and "1 regression: fine_tune_cot/synthetic_arithmetic" in failed.err


def test_a_nan_accuracy_is_an_error_not_noise(tmp_path, cli):
    results_file(tmp_path / "base", "ftc", 0.6, 0.05)
    results_file(tmp_path / "cand", "ftc", float("nan"), float("nan"))
    result = cli("compare", tmp_path / "base", tmp_path / "cand")
    assert result.code == 2 and "within noise" not in result.out
    assert "the accuracy of ftc on synthetic_arithmetic is nan, not a number" in result.err


def test_runs_match_across_recipes_and_by_match_never_by_recipe_name(tmp_path, cli):
    """A run against the same run of a modified copy of its recipe pairs by itself; two strategies pair with
    --match; nothing in common is exit 2 naming both sides, never a regression; the report names both folders."""
    import json as json_

    base = results_file(tmp_path / "base", "ftc", 0.6, 0.05)
    copy = results_file(tmp_path / "copy", "ftc", 0.61, 0.05)
    data = json_.loads(copy.read_text())  # another recipe's name, so another lm-eval task name
    data["results"] = {"harness_copy_ftc": data["results"].pop("harness_r_ftc")}
    data["harness"]["recipe"] = "copy"
    copy.write_text(json_.dumps(data))
    same = cli("compare", tmp_path / "base", tmp_path / "copy", "--report", tmp_path / "r.md")
    assert same.code == 0, same.err
    report = (tmp_path / "r.md").read_text()
    assert f"- baseline: {tmp_path / 'base'} (commit unknown; date 1)" in report
    assert f"- candidate: {tmp_path / 'copy'}" in report and "one seed a side" in report
    assert "Student's t on the spread between seeds, or z = 1.96 for one seed a side" in report
    other = tmp_path / "other"
    results_file(other, "logit_kd", 0.3, 0.05, strategy="logit_kd")
    nothing = cli("compare", tmp_path / "base", other)
    assert nothing.code == 2 and "nothing in common to compare: the baseline has ftc/synthetic_arithmetic; the " \
        "candidate has logit_kd/synthetic_arithmetic" in nothing.err
    paired = cli("compare", tmp_path / "base", other, "--match", "ftc=logit_kd")
    assert paired.code == 1 and "1 regression: ftc/synthetic_arithmetic" in paired.err
    assert base.exists()


def test_a_report_path_that_cannot_be_written_is_a_message(tmp_path, cli):
    results_file(tmp_path / "base", "ftc", 0.6, 0.05)
    results_file(tmp_path / "cand", "ftc", 0.6, 0.05)
    made = cli("compare", tmp_path / "base", tmp_path / "cand", "--report", tmp_path / "new" / "deeper" / "r.md")
    assert made.code == 0 and (tmp_path / "new" / "deeper" / "r.md").is_file()  # its folder made
    onto = cli("compare", tmp_path / "base", tmp_path / "cand", "--report", tmp_path / "new")
    assert onto.code == 2 and "Traceback" not in onto.err
    assert f"--report {tmp_path / 'new'}: cannot write it (Is a directory)" in onto.err
