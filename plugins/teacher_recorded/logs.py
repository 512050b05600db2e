"""Parsing the Zero-shot-CoT (Kojima et al. 2022) run logs: text-davinci-002 rationales for 12 benchmarks.

A log starts with the run's ``Namespace(...)`` (whose ``direct_answer_trigger`` is the stage-2 answer
trigger), then one record per example between ``*************************`` lines:
``Q: <question>`` / ``A: Let's think step by step.<rationale>`` / ``<trigger> <answer step>`` /
``pred_before``, ``pred_after``, ``pred_list``, ``pred_mode``, ``GT : <gold>``. Near the end a line
``accuracy : X`` holds the run's accuracy.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import DataError

SEPARATOR = "*************************"
COT_TRIGGER = "A: Let's think step by step."

# Log file stem for each benchmark (the logs' own, partly abbreviated, names).
LOG_NAMES = {
    "addsub": "addsub", "aqua": "aqua", "coin_flip": "coin_flip", "commonsense_qa": "commonsensqa",
    "date_understanding": "date_understanding", "gsm8k": "gsm8k", "last_letter_concatenation": "last_letters",
    "multiarith": "multiarith", "tracking_shuffled_objects": "shuffled_objects", "single_eq": "singleeq",
    "strategy_qa": "strategyqa", "svamp": "svamp",
}


@dataclass(frozen=True)
class LogRecord:
    index: int
    question: str
    rationale: str
    answer_step: str
    """The stage-2 completion: the text after the answer trigger."""
    prediction: str
    """The log's own cleansed prediction (``pred_after``)."""
    gold: str


@dataclass(frozen=True)
class ZeroShotCoTLog:
    path: Path
    trigger: str
    records: tuple[LogRecord, ...]
    reported_accuracy: float | None


def _namespace_value(header: str, key: str) -> str | None:
    m = re.search(rf"{key}=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")", header)
    return ast.literal_eval(m.group(1)) if m else None


def parse_log(path: Path) -> ZeroShotCoTLog:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); re-save the log as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the Zero-shot-CoT log: {exc.strerror}") from None
    trigger = _namespace_value(text[:3000], "direct_answer_trigger")
    if trigger is None:
        raise DataError(f"{path}: no Namespace(... direct_answer_trigger=...) header; not a Zero-shot-CoT log")
    trigger = trigger.strip()
    accuracy = re.search(r"^accuracy : ([0-9.]+)", text, re.M)
    records = []
    for chunk in text.split(SEPARATOR):
        if "\nGT : " not in chunk and not chunk.lstrip().startswith("GT : "):
            continue
        records.append(_record(chunk, trigger, len(records), path))
    if not records:
        raise DataError(f"{path}: no records found")
    return ZeroShotCoTLog(path, trigger, tuple(records), float(accuracy.group(1)) if accuracy else None)


def _record(chunk: str, trigger: str, index: int, path: Path) -> LogRecord:
    malformed = DataError(f"{path}: record {index + 1} is malformed (expected 'Q:', \"{COT_TRIGGER}\", "
                          f"'{trigger}', 'pred_before :', 'pred_after :' and 'GT :' lines)")
    q = chunk.find("\nQ: ")
    a = chunk.find("\n" + COT_TRIGGER, q)
    before = chunk.find("\npred_before :", a)
    after = chunk.find("\npred_after :", before)
    gold = re.search(r"^GT : (.*)$", chunk, re.M)
    prediction = re.search(r"^pred_after : (.*)$", chunk, re.M)
    if min(q, a, before, after) < 0 or gold is None or prediction is None:
        raise malformed
    # pred_before is the stage-2 completion; the text before it ends with the trigger and that completion
    # (which may itself repeat the trigger, so the split is anchored on it rather than on the trigger).
    # (pred_before can also be a lightly cleaned copy, e.g. without a colon: then split at the last trigger line.)
    answer_step = chunk[before + len("\npred_before :"): after].strip()
    body = chunk[a + 1 + len(COT_TRIGGER): before].rstrip()
    head = body[: len(body) - len(answer_step)].rstrip() if body.endswith(answer_step) else ""
    if not head.endswith(trigger):
        cut = body.rfind("\n" + trigger)
        if cut < 0:
            raise malformed
        head, answer_step = body[: cut + 1 + len(trigger)], body[cut + 1 + len(trigger):].strip()
    return LogRecord(index=index, question=chunk[q + 4: a].strip(), rationale=head[: -len(trigger)].strip(),
                     answer_step=answer_step, prediction=prediction.group(1).strip(), gold=gold.group(1).strip())


def accuracy_table(root: Path) -> str:
    """Markdown: each log's reported accuracy next to the harness's answer cleansing of its records, compared
    with the logged gold answer two ways: as the log compared (string equality) and by the harness's scoring
    (REFERENCE's rules: numbers as floats within 1e-6 for AddSub, SVAMP and SingleEq; gold without commas).

    ``python -m harness_builtins.teacher_recorded.logs DATA_DIR`` prints it (docs/tasks.md holds a copy).
    """
    from harness.answers import extract, is_correct
    from harness.components import create
    lines = ["| benchmark | records | log's accuracy | harness cleansing, log's comparison | difference | "
             "harness scoring | difference | predictions equal to the log's |",
             "|---|---|---|---|---|---|---|---|"]
    for task, stem in sorted(LOG_NAMES.items()):
        log = parse_log(root / "zero_shot_cot" / "log" / f"{stem}_zero_shot_cot.log")
        spec = create("task", task, data_dir=str(root)).answer
        predictions = [extract(r.answer_step, spec, None) for r in log.records]
        as_logged = 100 * sum(p is not None and p == r.gold for p, r in zip(predictions, log.records)) / len(
            predictions)
        ours = 100 * sum(is_correct(p, r.gold, spec) for p, r in zip(predictions, log.records)) / len(predictions)
        same = sum((p or "") == r.prediction for p, r in zip(predictions, log.records))
        reported = log.reported_accuracy or 0.0
        lines.append(f"| {task} | {len(log.records)} | {reported:.2f} | {as_logged:.2f} | "
                     f"{_difference(as_logged, reported)} | {ours:.2f} | {_difference(ours, reported)} | {same} |")
    return "\n".join(lines)


def _difference(a: float, b: float) -> str:
    return f"{round(a - b, 2) + 0.0:+.2f}"  # + 0.0: no "-0.00"


if __name__ == "__main__":
    import sys

    print(accuracy_table(Path(sys.argv[1])))
