"""Answer cleansing and scoring, as Fine-tune-CoT defines it (REFERENCE.md section 1).

Candidates are found with the answer kind's pattern. With a prediction prefix defined: the first candidate after
the prefix if it occurs, else the last candidate of the whole text. With no prefix: the first candidate.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from harness.types import AnswerSpec

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_YESNO_PUNCT = re.compile(r"[\"'\n.\s:,]")
_TEXT_STRIP = re.compile(r"[\"'\n.\s]")
KINDS = ("number", "number_string", "choice", "yesno", "text")


def candidates(text: str, spec: AnswerSpec) -> list[str]:
    """Every answer candidate in ``text``, in order."""
    if spec.kind in ("number", "number_string"):
        return _NUMBER.findall(text.replace(",", ""))
    if spec.kind == "choice":
        letters = spec.choices or "ABCDE"
        return re.findall(f"[{re.escape(letters)}]", text)
    if spec.kind == "yesno":
        return [t for t in _YESNO_PUNCT.sub(" ", text.lower()).split() if t in ("yes", "no")]
    if spec.kind == "text":  # quotes, newlines, periods and all whitespace removed: "n a o a". -> naoa
        stripped = _TEXT_STRIP.sub("", text)
        return [stripped] if stripped else []
    raise ValueError(f"unknown answer kind {spec.kind!r}; expected one of {', '.join(KINDS)}")


def extract(text: str, spec: AnswerSpec, prefix: str | None) -> str | None:
    """The cleansed prediction in ``text``, or None when there is no candidate."""
    if prefix is None:
        found = candidates(text, spec)
        return found[0] if found else None
    if prefix in text:
        found = candidates(text.split(prefix, 1)[1], spec)
        return found[0] if found else None
    found = candidates(text, spec)
    return found[-1] if found else None


def is_correct(prediction: str | None, gold: str, spec: AnswerSpec) -> bool:
    if prediction is None:
        return False
    if spec.kind == "number":
        try:
            return abs(float(prediction) - float(gold.replace(",", ""))) <= 1e-6
        except ValueError:
            return False
    if spec.kind == "number_string":
        return prediction == gold.replace(",", "")
    if spec.kind == "yesno":
        return prediction == gold.strip().lower()
    return prediction == gold.strip()


def score(text: str, gold: str, spec: AnswerSpec, prefix: str | None) -> dict[str, float]:
    """accuracy, contains_answer (any candidate right) and correct_format (prefix present) for one output."""
    prediction = extract(text, spec, prefix)
    return {
        "acc": float(is_correct(prediction, gold, spec)),
        "contains_answer": float(any(is_correct(c, gold, spec) for c in candidates(text, spec))),
        "correct_format": float(prefix is None or prefix in text),
    }


def process_results_for(kind: str, choices: str, prefix: str | None) -> Callable[[dict, list[Any]], dict[str, Any]]:
    """An lm-eval ``process_results`` function applying this module's rules (used by generated task files).

    lm-eval hands it one output (greedy) or, when a task repeats each question, the list a filter kept: every
    sample (the scores are their mean: pass@1 over the samples) or the majority vote's one."""
    spec = AnswerSpec(kind=kind, choices=choices)

    def process_results(doc: dict, results: list[Any]) -> dict[str, Any]:
        outputs = results[0] if isinstance(results[0], list) else results[:1]
        scores = [score(o, str(doc["answer"]), spec, prefix) for o in outputs]
        return {k: sum(s[k] for s in scores) / len(scores) for k in scores[0]}

    return process_results


def majority_filter_for(kind: str, choices: str, prefix: str | None) -> Callable[[Any, Any], Any]:
    """An lm-eval filter function (``function: custom``) for maj@n: of each question's samples, keep the first
    whose cleansed answer is the most common one (numbers vote by value: ``5`` and ``5.0`` are one answer;
    samples without an answer do not vote; ties go to the answer seen first)."""
    spec = AnswerSpec(kind=kind, choices=choices)

    def ballot(output: str) -> Any:
        answer = extract(output, spec, prefix)
        if answer is not None and kind == "number":
            return round(float(answer), 6)
        return answer

    def majority(resps: Any, docs: Any) -> list[list[str]]:
        kept = []
        for outputs in resps:
            answers = [ballot(o) for o in outputs]
            votes = Counter(a for a in answers if a is not None)
            if not votes:
                kept.append(list(outputs[:1]))
                continue
            winner = votes.most_common(1)[0][0]
            kept.append([outputs[answers.index(winner)]])
        return kept

    return majority


def normalise_question(question: str) -> str:
    """A question as compared across files and splits: lower case, runs of whitespace as one space."""
    return " ".join(question.lower().split())


def passes_filter(graded: Any, filter_on: bool = True) -> bool:
    """The correctness filter (Fine-tune-CoT step 2): a ``GradedGeneration`` is kept when its answer is correct,
    or always when the filter is off. Failed or empty generations never reach a strategy (the pipeline removes
    them), so this rule is about *wrong* rationales only."""
    return bool(graded.correct) or not filter_on
