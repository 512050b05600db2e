"""The regression gate behind ``harness compare``: results matched by run and task, each drop judged against a
noise band measured from seeds, paired questions or binomial standard errors."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from harness._results.rows import SETTINGS, Row, load, per_question
from harness.errors import BadInputError


@dataclass(frozen=True)
class Comparison:
    key: str
    baseline: Row
    """The baseline's first row (one seed); ``baseline_mean`` is over all its seeds."""
    candidate: Row | None
    delta: float | None
    """Candidate mean minus baseline mean."""
    noise: float
    """How large a drop noise alone may cause at the chosen confidence (the method's band)."""
    regression: bool
    baseline_mean: float = 0.0
    candidate_mean: float | None = None
    baseline_seeds: int = 1
    candidate_seeds: int = 0
    method: str = "stderr"
    """``seeds`` (spread between seeds), ``paired`` (per-question differences) or ``stderr`` (binomial)."""
    lost: int | None = None
    """Questions the baseline got right and the candidate wrong (one seed each side, per-question files)."""
    gained: int | None = None
    verdict: str = ""
    """``regression``, ``within noise``, ``improvement`` or ``missing`` (the same verdict as the exit code)."""


def _t_quantile(p: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(p, df))


METHODS = ("auto", "seeds", "paired", "stderr")


def noise_band(base: list[Row], cand: list[Row], z: float,
               method: str = "auto") -> tuple[float, str, int | None, int | None]:
    """The drop that noise alone may cause, and how it was measured:

    - ``seeds``: with at least two seeds on one side and three in all, the pooled spread of accuracy between
      seeds (training noise: seeds, thread counts, machines) over the standard error of a difference of means,
      times Student's t at the confidence ``z`` stands for;
    - ``paired``: one seed each, both with per-question files on the same questions: the spread of per-question
      differences (a paired test; only question noise, so it is blind to training noise);
    - ``stderr``: else the two binomial standard errors combined (unpaired).

    ``method`` forces one (``seeds`` needs the seeds, ``paired`` the per-question files); ``auto`` picks the first
    that applies.
    """
    n_b, n_c = len(base), len(cand)
    confidence = statistics.NormalDist().cdf(z)
    if method in ("auto", "seeds") and max(n_b, n_c) >= 2 and n_b + n_c >= 3:
        ss = sum((r.acc - statistics.fmean(x.acc for x in side)) ** 2 for side in (base, cand) for r in side)
        df = n_b + n_c - 2
        sd = math.sqrt(ss / df)
        return _t_quantile(confidence, df) * sd * math.sqrt(1 / n_b + 1 / n_c), "seeds", None, None
    # one seed a side: auto takes the binomial band (the paired test, blind to training noise, alarms more often)
    b_q, c_q = (per_question(base[0]), per_question(cand[0])) if method == "paired" else (None, None)
    if b_q and c_q and set(b_q) == set(c_q):
        diffs = [c_q[q] - b_q[q] for q in b_q]
        lost = sum(d < 0 for d in diffs)
        gained = sum(d > 0 for d in diffs)
        sd = statistics.pstdev(diffs)
        return z * sd / math.sqrt(len(diffs)), "paired", lost, gained
    b, c = base[0], cand[0]
    return z * math.sqrt((b.stderr or 0) ** 2 + (c.stderr or 0) ** 2), "stderr", None, None


def result_key(row: Row) -> str:
    """What a baseline and a candidate result are matched by: ``run/task``: the run (strategy, and student where
    a recipe has several) and the benchmark, never the recipe's name, so a run compares with the same run of a
    modified copy of its recipe. ``--match`` pairs runs of other names."""
    return f"{row.run or row.student}/{row.task}"


ONE_SEED_FALSE_ALARMS = 0.338
"""Measured (benchmarks/results/ci_gate_power.json): one seed a side, binomial stderr, flags 34% of unchanged
candidates (and the paired test 45%): seeds vary more than the questions' noise says."""


def settings_mismatches(baseline: list[Row], candidate: list[Row]) -> list[str]:
    """``run/task: key baseline -> candidate`` for each evaluation setting two compared results do not share."""
    base = {result_key(r): r.evaluation for r in baseline}
    out = []
    for r in candidate:
        key = result_key(r)
        if key not in base:
            continue
        b = base[key]
        differ = [f"{k} {b[k]!r} -> {r.evaluation[k]!r}" for k in SETTINGS
                  if k in b and k in r.evaluation and b[k] != r.evaluation[k]]
        if differ:
            out.append(f"{key}: {', '.join(differ)}")
    return sorted(set(out))


def compare(baseline: list[Row], candidate: list[Row], max_drop: float, z: float,
            tasks: list[str] | None = None, method: str = "auto") -> list[Comparison]:
    """Per (run, lm-eval task) mean accuracy of ``candidate`` against ``baseline``, each over its seeds. A drop is
    a regression when it is larger than ``max_drop`` and than the noise band (``noise_band``), so noise alone is
    not flagged; a rise beyond both is an improvement. A result missing from the candidate is a regression."""
    def groups(rows: list[Row]) -> dict[str, list[Row]]:
        out: dict[str, list[Row]] = {}
        for r in sorted(rows, key=lambda r: (r.seed if r.seed is not None else -1, r.file)):
            out.setdefault(result_key(r), []).append(r)
        return out

    base_groups, cand_groups = groups(baseline), groups(candidate)
    out = []
    for k, base in sorted(base_groups.items()):
        b = base[0]
        if tasks and b.task not in tasks and b.lm_eval_task not in tasks:
            continue
        b_mean = statistics.fmean(r.acc for r in base)
        cand = cand_groups.get(k)
        if not cand:
            out.append(Comparison(k, b, None, None, 0.0, True, b_mean, None, len(base), 0, verdict="missing"))
            continue
        c_mean = statistics.fmean(r.acc for r in cand)
        if not math.isfinite(c_mean) or not math.isfinite(b_mean):  # a NaN accuracy is no evidence of anything
            out.append(Comparison(k, b, cand[0], None, 0.0, True, b_mean, c_mean, len(base), len(cand),
                                  verdict="missing"))
            continue
        delta = c_mean - b_mean
        noise, used, lost, gained = noise_band(base, cand, z, method)
        threshold = max(max_drop, noise)
        regression = -delta > threshold
        verdict = "regression" if regression else "improvement" if delta > threshold else "within noise"
        out.append(Comparison(k, b, cand[0], delta, noise, regression, b_mean, c_mean, len(base), len(cand),
                              used, lost, gained, verdict))
    return out


def compare_folders(baseline: Path, candidate: Path, max_drop: float, z: float, tasks: list[str] | None = None,
                    method: str = "auto", allow_different_settings: bool = False,
                    match: dict[str, str] | None = None) -> list[Comparison]:
    """``harness compare``: both sides read (``match``: candidate runs renamed to the baseline runs they pair
    with), NaN accuracies refused, their evaluation settings checked to match (a ``BadInputError`` otherwise,
    unless allowed), at least one result in common, then ``compare``."""
    base, cand = load(baseline), load(candidate)
    if not base:
        raise BadInputError(f"{baseline}: no results with an accuracy metric")
    for r in (*base, *cand):
        if not math.isfinite(r.acc):
            raise BadInputError(f"{r.file}: the accuracy of {r.run or r.student} on {r.task} is {r.acc}, not a "
                                f"number: that evaluation failed; evaluate it again before comparing")
    if match:
        runs_b, runs_c = {r.run for r in base}, {r.run for r in cand}
        for b_run, c_run in match.items():
            if b_run not in runs_b or c_run not in runs_c:
                raise BadInputError(f"--match {b_run}={c_run}: the baseline's runs are {', '.join(sorted(runs_b))}; "
                                    f"the candidate's {', '.join(sorted(runs_c))}")
        renamed = {c: b for b, c in match.items()}
        cand = [dataclasses.replace(r, run=renamed[r.run]) if r.run in renamed else r for r in cand]
    keys_b, keys_c = {result_key(r) for r in base}, {result_key(r) for r in cand}
    if not keys_b & keys_c:
        raise BadInputError(f"nothing in common to compare: the baseline has {', '.join(sorted(keys_b))}; the "
                            f"candidate has {', '.join(sorted(keys_c)) or 'nothing'}. Pair runs of other names with "
                            f"--match BASELINE_RUN=CANDIDATE_RUN")
    mismatched = settings_mismatches(base, cand)
    if mismatched and not allow_different_settings:
        raise BadInputError("the baseline and the candidate were evaluated with different settings, so their "
                            "accuracies are not comparable:\n  " + "\n  ".join(mismatched) + "\nEvaluate both the "
                            "same way, or pass --allow-different-settings to compare them anyway")
    return compare(base, cand, max_drop, z, tasks, method)


def title(max_drop: float, z: float) -> str:
    confidence = statistics.NormalDist().cdf(z)
    return (f"candidate vs baseline (regression: a drop of more than {100 * max_drop:.1f} points and beyond the "
            f"noise band, one-sided at {100 * confidence:.1f}%: Student's t on the spread between seeds, or z = "
            f"{z:g} for one seed a side)")


def sides(baseline: Path, candidate: Path, found: list[Comparison]) -> list[str]:
    """What the report says about the two sides: each folder, the commits and dates of its results."""
    def about(name: str, folder: Path, rows: list[Row]) -> str:
        commits = sorted({c for c in (_commit(r.file) for r in rows) if c})
        dates = sorted({r.date for r in rows if r.date}) or ["unknown"]
        when = f"dates {dates[0]} to {dates[-1]}" if len(dates) > 1 else f"date {dates[0]}"
        return f"{name}: {folder} (commit {', '.join(c[:12] for c in commits) or 'unknown'}; {when})"

    base = [c.baseline for c in found]
    cand = [c.candidate for c in found if c.candidate is not None]
    lines = [about("baseline", baseline, base), about("candidate", candidate, cand)]
    if any(c.method in ("stderr", "paired") and c.baseline_seeds == 1 and c.candidate_seeds == 1 for c in found):
        lines.append(f"one seed a side: the noise band sees the questions' noise, not the seeds'; measured on this "
                     f"project's CI recipe it flags {100 * ONE_SEED_FALSE_ALARMS:.0f}% of unchanged candidates. "
                     f"Compare several seeds a side to trust a verdict")
    return lines


def _commit(file: str) -> str:
    try:
        return str(json.loads(Path(file).read_text()).get("harness", {}).get("git_commit") or "")
    except (OSError, ValueError, AttributeError):
        return ""
