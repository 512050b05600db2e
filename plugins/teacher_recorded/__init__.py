"""A teacher that replays recorded teacher output: the GPT-3 (text-davinci-002) Zero-shot-CoT logs.

Each task example is matched to its log record by question text (the logs are in their own order, and render
answer choices their own way, so the match uses the question stem, normalised). For multiple-choice tasks the
log's answer letter, and the ``(X)`` letters inside its rationale, are mapped to the task's own choice order
through the option texts. An example with no record gets an empty generation (``meta.missing``), which the
correctness filter drops.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from harness import Example, Generation, Teacher, hookimpl
from harness.answers import normalise_question
from harness.data import data_file, data_root
from harness.errors import BadInputError

from .logs import LOG_NAMES, LogRecord, parse_log

_CHOICES = re.compile(r"answer choices:", re.I)
_OPTION = re.compile(r"\(([A-F])\)\s*(.*?)(?=,?\s*\([A-F]\)|$)", re.S)


def stem(question: str) -> str:
    """The question without its answer choices, lowercased, whitespace collapsed."""
    text = _CHOICES.split(question)[0].replace("Which choice is true?", "")
    return normalise_question(text).rstrip(" .?")


def options(question: str) -> dict[str, str]:
    """Letter -> normalised option text, from ``Answer choices: (A) x, (B) y.`` or ``(A) x (B) y``."""
    parts = _CHOICES.split(question)
    if len(parts) < 2:
        return {}
    return {m.group(1): normalise_question(m.group(2)).rstrip(".,")
            for m in _OPTION.finditer(parts[-1].strip())}


@dataclass(frozen=True)
class Config:
    dataset: str = ""
    """Which benchmark's log to replay: one of the Fine-tune-CoT names (svamp, gsm8k, strategy_qa, ...)."""
    log: str = ""
    """Or a log file path (absolute, or relative to the data directory)."""
    data_dir: str = ""
    """The data directory (holding ``zero_shot_cot/log/``); default ``$HARNESS_DATA_DIR``."""

    def check(self) -> list[tuple[str, str]]:
        if bool(self.dataset) == bool(self.log):
            return [("dataset", f"give exactly one of dataset ({', '.join(sorted(LOG_NAMES))}) or log")]
        if self.dataset and self.dataset not in LOG_NAMES:
            return [("dataset", f"no recorded log for '{self.dataset}'; choose from {', '.join(sorted(LOG_NAMES))}")]
        return []


class ZeroShotCoTLogTeacher(Teacher):
    """Replays text-davinci-002 Zero-shot-CoT rationales (one greedy sample per question)."""

    Config = Config

    def __init__(self, config: Config):
        self.config = config

    def _log_path(self):
        c = self.config
        root = data_root(c.data_dir, "teacher.data_dir")
        relative = c.log or f"zero_shot_cot/log/{LOG_NAMES[c.dataset]}_zero_shot_cot.log"
        return data_file(root, relative, "teacher.log" if c.log else "teacher.dataset")

    def generate(self, examples: Sequence[Example], task, progress) -> list[list[Generation]]:
        log = parse_log(self._log_path())
        by_stem: dict[str, list[LogRecord]] = defaultdict(list)
        for record in log.records:
            by_stem[stem(record.question)].append(record)
        multiple_choice = task.answer.kind == "choice"
        out, missing = [], 0
        for example in examples:
            candidates = by_stem.get(stem(example.question))
            if not candidates:
                missing += 1
                out.append([Generation(example.id, 0, "", "", meta={"missing": True})])
            else:
                record = candidates.pop(0) if len(candidates) > 1 else candidates[0]
                out.append([self._generation(example, record, multiple_choice)])
            progress(1)
        if missing == len(examples) and examples:
            raise BadInputError(f"teacher: none of the {len(examples)} questions is in {log.path}; is it the log of "
                                f"this task?")
        return out

    @staticmethod
    def _generation(example: Example, record: LogRecord, multiple_choice: bool) -> Generation:
        rationale, answer = record.rationale, record.answer_step
        meta = {"log_index": record.index, "log_prediction": record.prediction, "log_gold": record.gold}
        if multiple_choice:
            theirs, ours = options(record.question), options(example.question)
            by_text = {text: letter for letter, text in ours.items()}
            mapping = {letter: by_text[text] for letter, text in theirs.items() if text in by_text}
            if mapping:

                def remap(m: re.Match) -> str:
                    return f"({mapping.get(m.group(1), m.group(1))})"

                rationale = re.sub(r"\(([A-F])\)", remap, rationale)
                answer = re.sub(r"\b([A-F])\b", lambda m: mapping.get(m.group(1), m.group(1)), answer, count=1)
                meta["letters"] = mapping
        return Generation(example.id, 0, rationale, answer, meta=meta)


@hookimpl
def register_teachers(register):
    register("zero_shot_cot_log", ZeroShotCoTLogTeacher)
