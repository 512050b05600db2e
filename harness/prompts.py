"""Teacher prompts: Zero-shot-CoT (two stages, Kojima et al.), Few-shot-CoT exemplars, and decomposition into
Socratic (sub-question, answer) pairs, shared by every prompting teacher (API or local model); and the student
formats of Fine-tune-CoT (``STUDENT_FORMATS``), shared by the strategies that train on rationales."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import DataError
from harness.types import SubStep

COT_TRIGGER = "Let's think step by step."


@dataclass(frozen=True)
class StudentFormat:
    """How a student is prompted with a question and what it learns to write (the formats of Fine-tune-CoT, Ho et
    al. 2023, and others)."""

    prompt: str
    """With ``{question}``."""
    target: str
    """With ``{rationale}`` and ``{answer}``."""
    prediction_prefix: str | None
    """The text after which the answer is read."""
    stop: tuple[str, ...]
    """Strings that end generation at test time."""

    def render_prompt(self, question: str) -> str:
        return self.prompt.format(question=question)

    def render_target(self, rationale: str, answer: str) -> str:
        return self.target.format(rationale=rationale.strip(), answer=answer)


STUDENT_FORMATS = {
    "token": StudentFormat("{question} ###", " {rationale} --> {answer}", "-->", ("###",)),
    "natural": StudentFormat("Q: {question}\n\nA: Let's think step by step.\n\n",
                             " {rationale}\n\nTherefore, the answer is {answer}", "Therefore, the answer is",
                             ("\n\nQ:",)),
    "think": StudentFormat("{question}", "<think>\n{rationale}\n</think>\n\n{answer}", "</think>", ()),
}
"""Fine-tune-CoT's formats: ``token`` (``{question} ###`` -> `` {rationale} --> {answer}``) and ``natural``; and
``think``, a reasoning model's form for chat students: the question as the user turn, the rationale in a
``<think>...</think>`` section, the answer read after it."""
FEW_SHOT_ANSWER = "The answer is"


def register_format(name: str, fmt: StudentFormat) -> None:
    """Make a student format known by ``name``: to strategies that take a ``format``, and to prompting teachers
    as ``teacher.prompt = "<name>"``, which then write in it (prompted with its ``prompt``, the answer read after
    its ``prediction_prefix``). A strategy that learns a top-k teacher's own tokens needs the teacher to write
    in exactly the format it trains: call this when your plugin module is imported. Registering another format
    under a taken name is an error."""
    existing = STUDENT_FORMATS.get(name)
    if existing is not None and existing != fmt:
        raise ValueError(f"student format {name!r} is registered already, differently")
    STUDENT_FORMATS[name] = fmt


def teacher_format(prompt: str) -> StudentFormat | None:
    """The student format a teacher prompted with ``prompt`` writes in: ``fine_tune_cot`` is ``token``; a format's
    name is that format; None for the prompting styles (Zero-shot-CoT, ...) whose text no student learns as is."""
    return STUDENT_FORMATS["token"] if prompt == "fine_tune_cot" else STUDENT_FORMATS.get(prompt)


def format_name(fmt: StudentFormat) -> str:
    return next((name for name, f in STUDENT_FORMATS.items() if f == fmt), "?")


def parse_formatted(fmt: StudentFormat, completion: str) -> tuple[str, str]:
    """(rationale, answer text) of a completion written in ``fmt``: the target's text before ``{rationale}``
    dropped, the answer after the marker between ``{rationale}`` and ``{answer}``, cut at the format's stops
    (empty when the marker is missing)."""
    head, _, rest = fmt.target.partition("{rationale}")
    between = rest.partition("{answer}")[0].strip()
    text = completion.lstrip()
    if head.strip() and text.startswith(head.strip()):
        text = text[len(head.strip()):]
    rationale, found, answer = text.partition(between) if between else (text, "", "")
    for stop in fmt.stop:
        answer = answer.split(stop)[0]
    return rationale.strip(), answer.strip() if found else ""


def zero_shot_stage1(question: str) -> str:
    """``Q: {question}\\nA: Let's think step by step.`` -> the rationale."""
    return f"Q: {question}\nA: {COT_TRIGGER}"


def zero_shot_stage2(question: str, rationale: str, trigger: str) -> str:
    """``{stage-1 prompt}{rationale}\\n{trigger}`` -> the answer."""
    return f"{zero_shot_stage1(question)}{rationale}\n{trigger}"


def load_few_shot(path: Path, key: str) -> str:
    """The exemplar block for ``key`` from a ``few_shot_cot_prompts.json``-style file."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise DataError(f"{path}: cannot read few-shot prompts: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg})") from None
    if key not in data or "prompt" not in data[key]:
        raise DataError(f"{path}: no few-shot prompt for '{key}'; it has {', '.join(sorted(data))}")
    return data[key]["prompt"].rstrip()


def few_shot(exemplars: str, question: str) -> str:
    """Exemplars, then ``Q: {question}\\nA:``; the completion is a rationale ending in ``The answer is X.``"""
    return f"{exemplars}\n\nQ: {question}\nA:"


def split_few_shot(completion: str) -> tuple[str, str]:
    """(rationale, answer text) of a Few-shot-CoT completion; the answer text follows the last 'The answer is'."""
    text = completion.split("\n\nQ:", 1)[0]
    at = text.rfind(FEW_SHOT_ANSWER)
    if at < 0:
        return text.strip(), ""
    return text[:at].strip(), text[at + len(FEW_SHOT_ANSWER):].strip()


DECOMPOSE_INSTRUCTIONS = (
    "Break the problem into simpler sub-questions and answer each one in turn. Write each as\n"
    "Sub-question N: ...\nAnswer N: ...\nand finish with the final answer as 'The answer is X.'"
)
DECOMPOSE_EXAMPLE = (
    "Problem: Tom has 5 apples. He buys 3 more and then gives 2 away. How many apples does he have?\n"
    "Sub-question 1: How many apples does Tom have after buying 3 more?\nAnswer 1: 5 + 3 = 8.\n"
    "Sub-question 2: How many apples does he have after giving 2 away?\nAnswer 2: 8 - 2 = 6.\n"
    "The answer is 6."
)


def decompose(question: str, example: str = DECOMPOSE_EXAMPLE) -> str:
    return f"{DECOMPOSE_INSTRUCTIONS}\n\n{example}\n\nProblem: {question}\n"


_STEP = re.compile(r"Sub-question\s*(\d+)\s*:\s*(.*?)\s*\n\s*Answer\s*\1\s*:\s*"
                   r"(.*?)(?=\n\s*Sub-question|\n\s*The answer is|\Z)", re.S)


def parse_decomposition(completion: str) -> tuple[tuple[SubStep, ...], str, str]:
    """(steps, rationale, answer text) from a decomposition completion; the rationale joins the sub-answers."""
    text = completion.split("\n\nProblem:", 1)[0]
    steps = tuple(SubStep(q.strip(), a.strip()) for _, q, a in _STEP.findall(text))
    _, answer = split_few_shot(text)
    rationale = " ".join(s.answer for s in steps)
    return steps, rationale, answer


PROMPT_KINDS = ("zero_shot_cot", "few_shot_cot", "decompose", "fine_tune_cot")
"""``fine_tune_cot`` prompts a teacher in the student's own format (``{question} ###``) and reads the answer after
``-->``: for a teacher that is itself a Fine-tune-CoT model, whose tokens a student can then learn one by one.
The name of any student format (``STUDENT_FORMATS``, ``register_format``) does the same in that format."""


def first_prompt(kind: str, question: str, exemplars: str = "") -> str:
    """The first (for Zero-shot-CoT: stage-1) prompt of a prompting teacher."""
    if kind == "zero_shot_cot":
        return zero_shot_stage1(question)
    if kind == "few_shot_cot":
        return few_shot(exemplars, question)
    if kind == "decompose":
        return decompose(question)
    fmt = teacher_format(kind)
    if fmt is not None:
        return fmt.render_prompt(question)
    raise ValueError(f"unknown prompt kind {kind!r}; one of {', '.join(PROMPT_KINDS)} or a student format "
                     f"({', '.join(STUDENT_FORMATS)})")


def parse_first(kind: str, completion: str) -> tuple[str, str | None, tuple[SubStep, ...]]:
    """(rationale, answer text, steps) of a first completion; the answer is None when a second stage must ask
    for it (Zero-shot-CoT)."""
    if kind == "few_shot_cot":
        rationale, answer = split_few_shot(completion)
        return rationale, answer, ()
    if kind == "decompose":
        steps, rationale, answer = parse_decomposition(completion)
        return rationale, answer, steps
    fmt = teacher_format(kind)
    if fmt is not None:
        rationale, answer = parse_formatted(fmt, completion)
        return rationale, answer, ()
    return completion.strip(), None, ()


def check_options(config: object, at_least_one: tuple[str, ...]) -> list[tuple[str, str]]:
    """Problems with a prompting teacher's common options (``prompt``, ``few_shot_file``/``few_shot_key``,
    and the counts named in ``at_least_one``), as ``(key, message)`` pairs for a ``Config.check``."""
    problems = []
    prompt = getattr(config, "prompt")
    if prompt not in PROMPT_KINDS and teacher_format(prompt) is None:
        problems.append(("prompt", f"'{prompt}': choose from {', '.join(PROMPT_KINDS)}, or a student format the "
                                   f"teacher should write in ({', '.join(STUDENT_FORMATS)})"))
    if prompt == "few_shot_cot" and not (getattr(config, "few_shot_file") and getattr(config, "few_shot_key")):
        problems.append(("few_shot_file", "few_shot_cot needs few_shot_file and few_shot_key"))
    problems += [(key, "must be at least 1") for key in at_least_one if getattr(config, key) < 1]
    top = getattr(config, "top_logprobs")
    if top < 0:
        problems.append(("top_logprobs", "must be 0 (off) or more"))
    if top and teacher_format(prompt) is None:
        problems.append(("top_logprobs", "records the teacher's tokens for the student to learn one by one, so the "
                                         "teacher must write in the student's format: set prompt = "
                                         "\"fine_tune_cot\" (or the name of your strategy's student format)"))
    return problems


@dataclass(frozen=True)
class PromptOptions:
    """The recipe keys every prompting teacher shares; a teacher's ``Config`` extends this."""

    model: str
    """The teacher model: a server's model name, a local directory or a hub id."""
    prompt: str = "zero_shot_cot"
    """``zero_shot_cot``, ``few_shot_cot``, ``decompose`` or ``fine_tune_cot`` (the student's own format)."""
    few_shot_file: str = ""
    """For ``few_shot_cot``: a ``few_shot_cot_prompts.json``-style file."""
    few_shot_key: str = ""
    """Its entry to use (e.g. ``svamp``)."""
    samples: int = 1
    """Rationales per question (diverse reasoning), each with a stable sample index."""
    temperature: float = 0.0
    top_logprobs: int = 0
    """k > 0: record, for every generated token, the teacher's k most likely tokens and their log-probabilities
    beside the text, in the same cache entry (``Generation.meta["signals"]``), for token-level distillation.
    Needs ``prompt = "fine_tune_cot"``: the teacher then writes in the student's own format."""
    max_tokens: int = 128
    answer_max_tokens: int = 32
