"""The evaluate step: write the lm-eval task for a trained student, open the backend it runs on, let lm-eval
score it and return the metrics with how they were made."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness._evaluation.backends import backend_for
from harness._evaluation.lm_eval_run import run_lm_eval
from harness._evaluation.lm_eval_task import filters, write_task
from harness.components import Strategy, Student, Task
from harness.errors import BadInputError
from harness.types import Example


def evaluate_student(student: Student, model_dirs: dict[str, Path], strategy: Strategy, task: Task,
                     examples: Sequence[Example], ev: Any, task_dir: Path, name: str, out: Path, seed: int,
                     note: Callable[[str], None] = lambda _: None,
                     progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write the lm-eval task, evaluate the trained student on it (``ev.backend``: in this process, placed on
    ``ev.device`` in ``ev.dtype``, or served by vLLM) and return the metrics with how they were made."""
    max_gen_toks = strategy.max_gen_toks(ev.max_gen_toks)
    paths = {role: str(Path(p).resolve()) for role, p in model_dirs.items()}
    chat = student.chat(Path(next(iter(paths.values()))))
    if chat and strategy.multi_call:
        raise BadInputError("student.chat_template: this strategy answers through several generate calls, which "
                            "the harness does not render through a chat template yet; set chat_template = \"off\"")
    stop = [*strategy.stop(), *([chat["end_of_turn"]] if chat else [])]
    write_task(task_dir, name, examples, [strategy.prompt(e) for e in examples], task.answer,
               strategy.prediction_prefix, stop, max_gen_toks, ev.samples, ev.temperature, ev.top_p)
    backend = backend_for(ev, paths, note)
    with contextlib.ExitStack() as stack:
        lm, made = backend.open(stack, student, paths, strategy, task, ev, max_gen_toks, out, seed, progress)
        # model_args names what the stock CLI loads: the model folder (several roles: the first, e.g. decomposer)
        try:
            res, _, _ = run_lm_eval(lm, task_dir, name, out / "lm_eval", next(iter(paths.values())), seed,
                                    bool(chat))
        except Exception as exc:
            raise backend.failure(exc, out) from None
    made |= {"chat_template": bool(chat), "samples": ev.samples, "temperature": ev.temperature, "top_p": ev.top_p,
             "seed": seed, "batch_size": ev.batch_size, "max_gen_toks": max_gen_toks}
    values = res["results"][name]
    first = filters(ev.samples)[0]
    metrics = {"acc": values[f"acc,{first}"], "acc_stderr": values[f"acc_stderr,{first}"],
               "contains_answer": values[f"contains_answer,{first}"],
               "correct_format": values[f"correct_format,{first}"],
               "n": len(examples), "task": name, "task_dir": str(task_dir.resolve()), "evaluation": made}
    if ev.samples > 1:
        vote = filters(ev.samples)[1]
        metrics["maj"] = values[f"acc,{vote}"]
        metrics["maj_stderr"] = values[f"acc_stderr,{vote}"]
    return metrics
