"""lm-eval itself, run in this process on an lm-eval ``LM`` (its HF model around an in-memory transformers model,
or a backend's): ``simple_evaluate`` on the written task, lm-eval's own results and samples files saved, and the
third-party notes meant for CLI users kept off the terminal."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

from harness.errors import RunError
from harness.models import is_encoder_decoder


def hf_lm(model: Any, tokenizer: Any, batch_size: int, max_length: int, progress: Any = None) -> Any:
    """lm-eval's own HF model wrapper around an in-memory transformers model (``progress(n)`` after each batch of
    ``n`` generations; the batches are lm-eval's own)."""
    for logger in ("lm-eval", "lm_eval"):  # its notes on being handed an in-memory model are for CLI users
        logging.getLogger(logger).setLevel(logging.ERROR)
    backend = "seq2seq" if is_encoder_decoder(model) else "causal"
    # the device the model is on (``harness.models.place``): lm-eval uses an in-memory model's own device
    lm = _quiet_hflm()(pretrained=model, tokenizer=tokenizer, device=str(model.device), batch_size=batch_size,
                       max_length=max_length, backend=backend)
    lm.progress = progress
    return lm


@functools.cache
def _quiet_hflm() -> type:
    """lm-eval's ``HFLM`` without its own progress bar (the harness shows the evaluate stage's); the same model
    otherwise."""
    from lm_eval.models.huggingface import HFLM

    class QuietHFLM(HFLM):
        progress: Any = None
        """Called with the number of sequences each batch generated (the evaluate stage's bar)."""

        def generate_until(self, requests, disable_tqdm: bool = False):
            return super().generate_until(requests, disable_tqdm=True)

        def _model_generate(self, context, *args, **kwargs):
            out = super()._model_generate(context, *args, **kwargs)
            if self.progress is not None:
                self.progress(int(context.shape[0]))
            return out

    return QuietHFLM


def served_lm(progress: Any = None, **kwargs: Any) -> Any:
    """lm-eval's OpenAI-compatible completions model (``LocalCompletionsAPI``, ``kwargs`` as its own) that calls
    ``progress(n)`` as each request's ``n`` answers arrive (retried requests count once, when they succeed)."""
    lm = _counting_completions()(**kwargs)
    lm.progress = progress
    return lm


@functools.cache
def _counting_completions() -> type:
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    class CountingCompletionsAPI(LocalCompletionsAPI):
        progress: Any = None

        def parse_generations(self, outputs: Any, **kwargs: Any) -> list[str]:  # type: ignore[override]
            answers = LocalCompletionsAPI.parse_generations(outputs=outputs, **kwargs)
            if self.progress is not None:
                self.progress(len(answers))
            return answers

    return CountingCompletionsAPI


@functools.cache
def _drop_attention_mask_note() -> None:
    """transformers' one-time note that a generate call got no attention mask: lm-eval's HFLM passes none (its
    choice; the stock CLI behaves the same). A filter, not a level: transformers reads that logger's level to
    decide other things (a level set there turns on its tensor-parallel plan check and its warnings)."""
    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "attention_mask" not in record.getMessage()

    logging.getLogger("transformers.modeling_utils").addFilter(Drop())


@functools.cache
def _quiet_request_retries() -> None:
    """lm-eval's API model logs every failed request and retry with its exception, and asyncio prints a traceback
    for each request still in flight when one fails for good: a server that dies mid-run made dozens of them.
    The harness reports the failure itself, once (``Backend.failure``)."""
    class Drop(logging.Filter):
        def __init__(self, text: str):
            super().__init__()
            self.text = text

        def filter(self, record: logging.LogRecord) -> bool:
            return self.text not in record.getMessage()

    logging.getLogger("lm_eval.models.api_models").addFilter(Drop("retrying"))
    logging.getLogger("asyncio").addFilter(Drop("Task exception was never retrieved"))


@functools.cache
def _quiet_git_hash() -> None:
    """lm-eval records the git commit of the current directory with ``git describe``, whose "fatal: not a git
    repository" goes straight to the terminal outside a checkout: the same lookup, with git's complaint dropped."""
    import subprocess

    import lm_eval.evaluator
    import lm_eval.loggers.utils as lm_utils

    def git_commit_hash() -> str | None:
        try:
            return subprocess.check_output(["git", "describe", "--always"], stderr=subprocess.DEVNULL).strip().decode()
        except (subprocess.CalledProcessError, FileNotFoundError):
            return lm_utils.get_commit_from_path(os.getcwd())

    for module in (lm_eval.evaluator, lm_utils):
        if hasattr(module, "get_git_commit_hash"):
            module.get_git_commit_hash = git_commit_hash


def run_lm_eval(lm: Any, task_dir: Path, name: str, out_dir: Path, model_path: str, seed: int,
                chat_template: bool = False) -> tuple[dict[str, Any], Path, list[Path]]:
    """Evaluate an lm-eval ``LM`` on the generated task; save lm-eval's results and samples files. ``model_path``
    goes into the results' ``model_args`` (``pretrained=...``): the folder the stock CLI would load."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for logger in ("lm-eval", "lm_eval"):  # lm-eval's notes for CLI users
        logging.getLogger(logger).setLevel(logging.ERROR)
    _drop_attention_mask_note()
    _quiet_request_retries()
    import datasets

    datasets.disable_progress_bars()
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker

    _quiet_git_hash()
    from lm_eval.tasks import TaskManager

    tracker = EvaluationTracker(output_path=str(out_dir))
    results = simple_evaluate(
        model=lm,
        tasks=[name],
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        log_samples=True,
        evaluation_tracker=tracker,
        model_args={"pretrained": model_path},
        apply_chat_template=chat_template,  # the stock CLI: --apply_chat_template
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    if results is None:
        raise RunError(f"lm-eval returned no results for task {name}")
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task, task_samples in samples.items():
        tracker.save_results_samples(task_name=task, samples=task_samples)
    found = sorted(out_dir.rglob("results_*.json"))
    if not found:
        raise RunError(f"lm-eval did not write its results file under {out_dir}")
    return results, found[-1], sorted(out_dir.rglob(f"samples_{name}_*.jsonl"))
