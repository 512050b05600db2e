"""Where a trained student runs while lm-eval evaluates it: one class per backend, owning its recipe rules, its
checks before the run and the run itself. A new backend is one class added to ``BACKENDS``: the recipe's
``evaluation.backend`` accepts its name, ``harness validate`` runs its checks, and the evaluate step opens it.

- ``hf``: lm-eval's transformers model in this process, the student placed on ``evaluation.device`` in
  ``evaluation.dtype``.
- ``vllm``: each of the student's models served by vLLM (``evaluation.serve``) on 127.0.0.1, lm-eval talking to
  it through its OpenAI-compatible completions model; always stopped when the evaluation ends.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from harness.components import Strategy, Student, Task
from harness.errors import EnvironmentFailure
from harness.generation import max_positions
from harness.models import is_encoder_decoder, place

Problems = list[tuple[str, str]]


class Backend:
    """One way of running the student for lm-eval. Subclasses set ``name`` and implement ``open``."""

    name: ClassVar[str] = ""

    def recipe_problems(self, ev: Any) -> Problems:
        """``(key, message)`` for ``[evaluation]`` settings this backend cannot honour (checked when the recipe
        is read, so the message comes before anything runs)."""
        return []

    def preflight(self, ev: Any) -> Problems:
        """Checks of the environment the backend needs (a command that must exist...), run by ``validate`` and
        before the first stage."""
        return []

    def fallback(self, paths: Mapping[str, str]) -> tuple[str, str] | None:
        """``(backend name, note)`` when these model folders must be evaluated by another backend."""
        return None

    def failure(self, exc: Exception, out: Path) -> Exception:
        """What an exception raised while lm-eval ran becomes: by default itself."""
        return exc

    def open(self, stack: contextlib.ExitStack, student: Student, paths: Mapping[str, str], strategy: Strategy,
             task: Task, ev: Any, max_gen_toks: int, out: Path, seed: int,
             progress: Callable[[int], None] | None = None) -> tuple[Any, dict[str, Any]]:
        """Return the lm-eval ``LM`` that evaluates the student's models (``paths``: role -> folder) and what
        the results' provenance records about where it ran. Anything started is stopped when ``stack`` closes.
        ``progress(n)``: call it as ``n`` more answers are generated, where the backend can tell."""
        raise NotImplementedError


class HFBackend(Backend):
    name = "hf"

    def open(self, stack, student, paths, strategy, task, ev, max_gen_toks, out, seed, progress=None):
        from harness._evaluation.lm_eval_run import hf_lm

        models = {role: student.load(Path(p)) for role, p in paths.items()}
        placement = {role: place(m, ev.device, ev.dtype) for role, (m, _) in models.items()}
        lm = strategy.lm_eval_model(models, ev.batch_size, task)  # several generate calls (Socratic CoT)
        if lm is None:
            model, tokenizer = models[""]
            lm = hf_lm(model, tokenizer, ev.batch_size, max_positions(model), progress)
        return lm, {"backend": self.name, **next(iter(placement.values()))}


DEFAULT_SERVE = "vllm serve {model} --host 127.0.0.1 --port {port}"


def serve_command(ev: Any) -> str:
    """The command that serves a student for ``backend = "vllm"``: the recipe's, else vLLM's own CLI; a dtype
    the recipe names is passed on unless the command sets one."""
    command = ev.serve or DEFAULT_SERVE
    if ev.dtype != "auto" and "--dtype" not in command:
        command += f" --dtype {ev.dtype}"
    return command


class VLLMBackend(Backend):
    name = "vllm"

    def recipe_problems(self, ev: Any) -> Problems:
        problems = []
        if ev.serve and ("{model}" not in ev.serve or "{port}" not in ev.serve):
            problems.append(("serve", "the command needs {model} and {port}, e.g. "
                                      "\"vllm serve {model} --host 127.0.0.1 --port {port}\""))
        if ev.samples > 1:
            problems.append(("backend", "sampled evaluation (samples > 1) runs on the hf backend: lm-eval's "
                                        "completions model sends every repeat of a question with the same seed, "
                                        "so a server would return one sample n times; set backend = \"hf\""))
        return problems

    def preflight(self, ev: Any) -> Problems:
        from harness.serve import command_problems

        return [("serve", message) for _, message in command_problems(serve_command(ev), "serve")]

    def fallback(self, paths: Mapping[str, str]) -> tuple[str, str] | None:
        if any(is_encoder_decoder(p) for p in paths.values()):
            return "hf", ("evaluation.backend = \"vllm\": this student is an encoder-decoder model, which the "
                          "harness evaluates with the hf backend (vLLM serves it as decoder-only)")
        return None

    def failure(self, exc: Exception, out: Path) -> Exception:
        return _served_failure(exc, out)

    def open(self, stack, student, paths, strategy, task, ev, max_gen_toks, out, seed, progress=None):
        """Serve each role's model and return lm-eval's completions model over it, or a multi-call strategy's
        loop run against the served models (``ServedModel`` stands in for each model wherever the harness
        generates)."""
        from transformers import AutoConfig, AutoTokenizer

        from harness.serve import ServedModel, managed_server

        command = serve_command(ev)
        served = {}
        for role, path in paths.items():
            log = out / f"serve{'-' + role if role else ''}.log"
            served[role] = (stack.enter_context(managed_server(command, path, log, ev.serve_timeout)), path)
        made = {"backend": self.name, "engine_version": _server_version(served[next(iter(served))][0]),
                "device": "vllm server", "dtype": ev.dtype, "serve": command}
        if strategy.multi_call:
            models = {}
            for role, (url, path) in served.items():
                tokenizer = AutoTokenizer.from_pretrained(path)
                models[role] = (ServedModel(url, path, AutoConfig.from_pretrained(path), tokenizer, ev.batch_size),
                                tokenizer)
            return strategy.lm_eval_model(models, ev.batch_size, task), made
        from harness._evaluation.lm_eval_run import served_lm

        url, path = served[""]
        lm = served_lm(progress, base_url=f"{url}/completions", model=path, tokenizer=path,
                       tokenizer_backend="huggingface", num_concurrent=min(ev.batch_size, 32),
                       max_gen_toks=max_gen_toks, max_length=max_positions(AutoConfig.from_pretrained(path)), seed=seed)
        return lm, made


def _served_failure(exc: Exception, out: Path) -> Exception:
    """A served student that stopped answering mid-evaluation (the server died or errs): one message naming its
    log and its last lines, instead of lm-eval's retries and tracebacks."""
    from harness._boundary import http_failure

    if http_failure(exc) is None and "Session is closed" not in str(exc):
        return exc
    logs = sorted(out.glob("serve*.log"))
    tail = "\n".join(logs[0].read_text(errors="replace").splitlines()[-8:]) if logs else ""
    detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    where = ", ".join(str(p) for p in logs) or "the stage folder"
    return EnvironmentFailure(f"evaluation: the served student stopped answering ({type(exc).__name__}: {detail}); the "
                    f"server's log: {where}" + (f"\n{tail}" if tail else "") + "\nCheck the server's memory and "
                    "command (evaluation.serve)")


def _server_version(base_url: str) -> str | None:
    try:
        with urllib.request.urlopen(base_url.removesuffix("/v1") + "/version", timeout=5) as r:
            return json.loads(r.read()).get("version")
    except (OSError, ValueError):
        return None


BACKENDS: dict[str, Backend] = {b.name: b for b in (HFBackend(), VLLMBackend())}
"""Every evaluation backend by the name a recipe gives (``evaluation.backend``)."""


def backend_for(ev: Any, paths: Mapping[str, str], note: Callable[[str], None]) -> Backend:
    """The backend that evaluates these model folders: the recipe's, or the one it falls back to (with a note)."""
    backend = BACKENDS[ev.backend]
    fallback = backend.fallback(paths)
    if fallback is not None:
        name, message = fallback
        note(message)
        backend = BACKENDS[name]
    return backend
