"""Reading lm-eval results files (the harness's and anyone's) into rows; comparing two sets of results."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import BadInputError

# Fine-tune-CoT's headline accuracies (REFERENCE.md section 1; teacher text-davinci-002 Zero-shot-CoT).
PAPER = {
    "teacher (175B)": ("text-davinci-002", "zero_shot_cot", 175e9,
                       [78.79, 64.20, 67.58, 53.20, 57.71, 90.04, 53.45]),
    "GPT-3 6.7B vanilla fine-tune": ("GPT-3 6.7B", "vanilla", 6.7e9,
                                     [15.00, 20.67, 14.41, 33.78, 32.67, 72.00, 65.21]),
    "GPT-3 6.7B Fine-tune-CoT": ("GPT-3 6.7B", "fine_tune_cot", 6.7e9,
                                 [33.33, 12.67, 60.36, 64.44, 52.67, 98.67, 55.02]),
    "GPT-3 6.7B diverse reasoning": ("GPT-3 6.7B", "diverse_reasoning", 6.7e9,
                                     [53.33, 30.33, 83.78, 73.33, 62.00, 100.00, 58.22]),
    "GPT-2 124M vanilla": ("GPT-2 124M", "vanilla", 124e6, [12.22, 10.33, 27.93, 33.78, 1.33, 60.00, 54.44]),
    "GPT-2 124M Fine-tune-CoT": ("GPT-2 124M", "fine_tune_cot", 124e6, [8.33, 4.33, 25.23, 38.67, 4.67, 77.33, 55.75]),
    "GPT-2 124M diverse": ("GPT-2 124M", "diverse_reasoning", 124e6, [17.78, 10.33, 21.62, 45.33, 6.00, 76.00, 56.33]),
    "Flan-T5 700M diverse": ("Flan-T5 700M", "diverse_reasoning", 700e6,
                             [20.00, 13.67, 87.39, 89.33, 65.33, 100.00, 61.72]),
}
PAPER_TASKS = ["multiarith", "svamp", "date_understanding", "tracking_shuffled_objects", "last_letter_concatenation",
               "coin_flip", "strategy_qa"]


def compact(x: float) -> str:
    """A count the way the tables and plots show it: 850k, 124M, 6.7B."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


@dataclass(frozen=True)
class Row:
    task: str
    """The benchmark (the harness task kind, or lm-eval's task name for foreign files)."""
    strategy: str
    student: str
    teacher: str
    acc: float
    stderr: float | None
    n: int | None
    lm_eval_task: str
    recipe: str = ""
    run: str = ""
    parameters: float | None = None
    date: str = ""
    file: str = ""
    reference: bool = False
    diverse_samples: int | None = None
    """D, for diverse-reasoning results."""
    teacher_accuracy: float | None = None
    """The teacher's accuracy on the training questions, when a teacher was used."""
    seed: int | None = None
    """The training seed (runs of one recipe with several seeds are several rows)."""
    teacher_cost: float | None = None
    """What the teach stage's requests cost (from the recipe's prices), when it recorded one."""
    evaluation: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    """How the student was evaluated (``SETTINGS``: samples, temperature, top_p, backend, dtype, max_gen_toks;
    results written before these were recorded read as greedy, hf, float32)."""
    maj: float | None = None
    """Majority-vote accuracy over the samples (maj@n), for sampled evaluations."""

    @property
    def evaluation_label(self) -> str:
        e = self.evaluation
        if not e:
            return ""
        how = (f"pass@1 of {e['samples']}, T={e['temperature']:g}" if e.get("samples", 1) > 1 else "greedy")
        return f"{how} · {e.get('backend', 'hf')} · {e.get('dtype', 'float32')}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SETTINGS = ("samples", "temperature", "top_p", "backend", "dtype", "max_gen_toks")
"""The evaluation settings two results must share to be compared (``harness compare`` refuses otherwise)."""
_DEFAULTS = {"samples": 1, "temperature": 0.0, "top_p": 1.0, "backend": "hf", "dtype": "float32"}


def evaluation_settings(harness_block: dict[str, Any]) -> dict[str, Any]:
    """The ``SETTINGS`` a result was evaluated with (defaults for results that predate their recording)."""
    recorded = harness_block.get("evaluation") or {}
    return {k: recorded.get(k, _DEFAULTS.get(k)) for k in SETTINGS if k in recorded or k in _DEFAULTS}


def _metric(values: dict[str, Any], name: str) -> float | None:
    for key in (f"{name},none", f"{name},pass@1", name):
        if isinstance(values.get(key), (int, float)):
            return float(values[key])
    return None


def read_file(path: Path) -> list[Row]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not a readable lm-eval results file ({exc})") from None
    if not isinstance(data.get("results"), dict):
        summary = " (a benchmark's summary: its Markdown table beside it is the one to read)" if \
            isinstance(data.get("summary"), dict) else ""
        raise BadInputError(f"{path}: not an lm-eval results file{summary}; the leaderboard reads the "
                            f"results_<time>.json files that runs publish (a folder of them, searched recursively)")
    h = data.get("harness") or {}
    strategy = h.get("strategy") or {}
    diverse = (strategy.get("config") or {}).get("samples") if strategy.get("kind") == "diverse_reasoning" else None
    rows = []
    for task, values in data["results"].items():
        acc = _metric(values, "acc")
        if acc is None:
            acc = _metric(values, "exact_match")
        if acc is None:
            continue
        n = (data.get("n-samples") or {}).get(task, {}).get("effective")
        name = lambda part, default: (h.get(part) or {}).get("name") or (h.get(part) or {}).get("kind") or default
        rows.append(Row(
            task=name("task", task), strategy=name("strategy", "-"),
            student=name("student", None) or str(data.get("model_name") or "-"), teacher=name("teacher", "-"),
            acc=acc,
            stderr=_metric(values, "acc_stderr"), n=n, lm_eval_task=task, recipe=h.get("recipe", ""),
            run=h.get("run_name", ""), parameters=h.get("student_parameters"), date=str(data.get("date", "")),
            file=str(path), diverse_samples=diverse, teacher_accuracy=h.get("teacher_accuracy"),
            seed=(h.get("training") or {}).get("seed"), teacher_cost=h.get("teacher_cost"),
            evaluation=evaluation_settings(h) if h else {},
            maj=next((float(v) for k, v in values.items() if k.startswith("acc,maj@")), None)))
    return rows


def load(path: Path, latest: bool = True) -> list[Row]:
    """Every row under ``path`` (a results file or a folder searched recursively, less the ``baselines`` folders
    in it: CI's references, shown when named themselves); with ``latest``, only the newest result of each
    (recipe, run, lm-eval task)."""
    if not path.exists():
        raise BadInputError(f"{path}: no such results file or directory")
    files = [path] if path.is_file() else sorted(f for f in path.rglob("results_*.json")
                                                 if "baselines" not in f.relative_to(path).parts)
    rows = [row for f in files for row in read_file(f)]
    if latest:
        newest: dict[tuple, Row] = {}
        for row in sorted(rows, key=lambda r: (r.date, r.file)):
            newest[(row.recipe, row.run, row.lm_eval_task, row.student if not row.recipe else "", row.seed)] = row
        rows = list(newest.values())
    return rows


def reference_rows() -> list[Row]:
    return [Row(task=task, strategy=strategy, student=student, teacher="text-davinci-002", acc=acc / 100,
                stderr=None, n=None, lm_eval_task=task, run=label, parameters=params, reference=True)
            for label, (student, strategy, params, values) in PAPER.items()
            for task, acc in zip(PAPER_TASKS, values)]


def samples_file(row: Row) -> Path | None:
    """lm-eval's per-sample file beside a results file (``samples_<task>_<time>.jsonl``), if there is one."""
    results = Path(row.file)
    stamp = results.stem[len("results_"):]
    path = results.parent / f"samples_{row.lm_eval_task}_{stamp}.jsonl"
    return path if path.is_file() else None


def per_question(row: Row) -> dict[int, float] | None:
    """Each test question's correctness (lm-eval's ``acc`` per ``doc_id``) from the samples file."""
    path = samples_file(row)
    if path is None:
        return None
    out = {}
    with path.open(newline="\n") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                out[int(record["doc_id"])] = float(record.get("acc", 0.0))
    return out


SORTS = {"accuracy": lambda r: -r.acc, "task": lambda r: (r.task, -r.acc), "strategy": lambda r: (r.strategy, -r.acc),
         "student": lambda r: (r.student, -r.acc), "date": lambda r: r.date}
"""The orders ``harness leaderboard --sort`` offers."""


def select(path: Path, latest: bool = True, reference: bool = False, sort: str = "task",
           **contains: str | None) -> list[Row]:
    """The rows ``leaderboard`` and ``plot`` show: ``load``, the paper's rows with ``reference``, only rows whose
    ``task``/``strategy``/``student``/``teacher`` contain the given text, in the ``sort`` order."""
    rows = load(path, latest=latest)
    if reference:
        rows += reference_rows()
    for field_name, wanted in contains.items():
        if wanted:
            rows = [r for r in rows if wanted in getattr(r, field_name)]
    return sorted(rows, key=SORTS[sort])
