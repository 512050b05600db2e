"""An inference server the harness starts and stops itself (public: teachers and evaluation backends use it).

``managed_server(command, model, log)`` runs a command that serves an OpenAI-compatible API on 127.0.0.1 (vLLM's
``vllm serve``, from its own virtualenv if need be), waits until it answers, streams its output to a log file, and
always stops it: on success, on error and on Ctrl-C. The command is a template with ``{model}`` and ``{port}``::

    /opt/vllm/bin/vllm serve {model} --host 127.0.0.1 --port {port} --max-model-len 256 --dtype float32

Example::

    with managed_server(command, "runs/kd_teacher/train-teacher/model", Path("serve.log")) as base_url:
        ...  # an OpenAI client on base_url (http://127.0.0.1:PORT/v1)
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.errors import BadInputError, EnvironmentFailure, RunError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command_problems(command: str, key: str) -> list[tuple[str, str]]:
    """Problems with a server command template: it must name ``{model}`` and ``{port}`` and its program exist."""
    problems = []
    for field in ("{model}", "{port}"):
        if field not in command:
            problems.append((key, f"the command must contain {field} (the harness fills it in)"))
    try:
        words = shlex.split(command)
    except ValueError as exc:
        return [(key, f"cannot be split into words: {exc}")]
    program = words[0] if words else ""
    problems += secret_problems(command, key)
    if program and not (Path(program).is_file() or _which(program)):
        problems.append((key, f"'{program}' is not an executable file or a program on PATH"))
    return problems


def secret_problems(command: str, key: str) -> list[tuple[str, str]]:
    """A command that passes a secret (``--api-key ...``): it would be recorded with the results. The value is
    never echoed (it may be the key)."""
    from harness.secrets import command_secret

    if command and command_secret(command):
        return [(key, "passes a secret on the command line (an --api-key option, a NAME=value variable such as "
                      "HF_TOKEN, or a key itself), which would be recorded with the results; a server the harness "
                      "starts on 127.0.0.1 needs none, and one that downloads a model reads HF_TOKEN from the "
                      "environment: export it instead and remove it from the command")]
    return []


def _which(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None


@contextlib.contextmanager
def managed_server(command: str, model: str, log: Path, timeout: float = 600.0,
                   env: dict[str, str] | None = None) -> Iterator[str]:
    """Start the server, yield its ``/v1`` base URL once it answers, stop it afterwards whatever happens."""
    port = free_port()
    # only the two placeholders are filled: other braces (vLLM's --override-generation-config '{"temperature": 0}')
    # are the command's own
    argv = [part.replace("{model}", model).replace("{port}", str(port)) for part in shlex.split(command)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **(env or {})})
        except OSError as exc:
            raise BadInputError(f"cannot start the server '{argv[0]}': {exc.strerror}") from None
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                    raise RunError(f"the server exited with code {proc.returncode} before answering; log: {log}\n"
                                   f"{tail}")
                if _answers(base):
                    break
                if time.monotonic() > deadline:
                    raise RunError(f"the server did not answer within {timeout:.0f} s (a model that loads for longer: "
                                   f"raise teacher.serve_timeout or evaluation.serve_timeout); log: {log}")
                time.sleep(0.5)
            yield f"{base}/v1"
        finally:
            _stop(proc)


def _answers(base: str) -> bool:
    for path in ("/health", "/v1/models"):
        try:
            with urllib.request.urlopen(base + path, timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            continue
    return False


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group, SIGKILL after 20 s (vLLM starts engine processes)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class ServedScorer:
    """A served model scoring text during training (on-policy distillation): vLLM's prompt log-probabilities of
    each sequence, one completions request per sequence (``max_tokens = 1``), as ``Teacher.scorer`` describes.
    The server (``managed_server``) is started on first use and stopped by ``close`` (or when the process
    exits)."""

    def __init__(self, command: str, model: str, log: Path, timeout: float = 600.0):
        self.command, self.model, self.log, self.timeout = command, model, log, timeout
        self.seconds = 0.0
        self._stack = None
        self._client = None

    def _start(self) -> None:
        import atexit
        import contextlib

        from openai import OpenAI

        self._stack = contextlib.ExitStack()
        base_url = self._stack.enter_context(managed_server(self.command, self.model, self.log, self.timeout))
        atexit.register(self.close)
        self._client = OpenAI(base_url=base_url, api_key="none", max_retries=2, timeout=120)

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def score(self, input_ids, attention_mask, k: int):
        import time

        import torch

        started = time.perf_counter()
        if self._client is None:
            self._start()
        ids = torch.full((*input_ids.shape, k), -1, dtype=torch.long)
        logprobs = torch.full((*input_ids.shape, k), float("-inf"))
        for row in range(input_ids.shape[0]):
            tokens = input_ids[row][attention_mask[row].bool()].tolist()
            r = self._request(tokens, k)
            scored = (r.choices[0].model_extra or {}).get("prompt_logprobs") or []
            if len(scored) != len(tokens):
                raise RunError(f"the served teacher returned {len(scored)} prompt log-probabilities for "
                               f"{len(tokens)} tokens; it must support prompt_logprobs (vLLM does)")
            for position, entry in enumerate(scored):
                if not entry:
                    continue  # the first token has no prediction
                best = sorted(((int(t), float(v["logprob"])) for t, v in entry.items()), key=lambda tv: -tv[1])[:k]
                ids[row, position, :len(best)] = torch.tensor([t for t, _ in best])
                logprobs[row, position, :len(best)] = torch.tensor([v for _, v in best])
        self.seconds += time.perf_counter() - started
        return ids.to(input_ids.device), logprobs.to(input_ids.device)


    def _request(self, tokens: list[int], k: int) -> Any:
        import openai

        try:
            return self._client.completions.create(model=self.model, prompt=tokens, max_tokens=1, temperature=0.0,
                                                   extra_body={"prompt_logprobs": k})
        except openai.APIError as exc:  # after the client's retries: the server died or keeps failing
            status = getattr(exc, "status_code", None)
            what = f"answered HTTP {status}" if status else "stopped answering"
            raise EnvironmentFailure(
                f"the teacher's server ({self.model}) {what} while scoring the student's samples (on-policy "
                f"distillation): {str(exc).splitlines()[0][:200]}; its log: {self.log}. Check the server's memory "
                f"and command (teacher.serve)") from None


class ServedModel:
    """A model behind an OpenAI-compatible completions endpoint, standing in for an in-memory transformers model
    wherever the harness generates with ``harness.generation.greedy_generate``: a multi-call strategy's loop
    (Socratic CoT) runs against the server unchanged. ``config`` and ``tokenizer`` are the model's own: prompts go
    out as token ids, left-truncated and with the new tokens capped exactly as ``greedy_generate`` does, so the
    server sees what the in-memory model would. Requests go out ``concurrency`` at a time, greedy, cut at the stop
    strings."""

    def __init__(self, base_url: str, name: str, config: Any, tokenizer: Any, concurrency: int = 16):
        self.base_url, self.name, self.config, self.tokenizer = base_url, name, config, tokenizer
        self.concurrency = concurrency
        self.device = "server"

    def complete(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]:
        from concurrent.futures import ThreadPoolExecutor

        from openai import OpenAI

        from harness.generation import cut_at_stop, max_positions

        client = OpenAI(base_url=self.base_url, api_key="none", max_retries=3, timeout=300)
        limit = max_positions(self.config)
        new = max(1, min(max_new_tokens, limit // 2))

        def one(prompt: str) -> str:
            ids = self.tokenizer(prompt)["input_ids"][-(limit - new):]
            r = client.completions.create(model=self.name, prompt=ids, max_tokens=new, temperature=0.0,
                                          stop=list(stop) or None)
            return r.choices[0].text

        with ThreadPoolExecutor(self.concurrency) as pool:
            return [cut_at_stop(t, stop) for t in pool.map(one, prompts)]
