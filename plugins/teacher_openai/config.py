"""The ``[teacher]`` table of the openai teacher, and the error no retry can fix (shared by its modules)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness import prompts, secrets, serve


@dataclass(frozen=True)
class Config(prompts.PromptOptions):
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key; empty for servers that need none."""
    endpoint: str = "completions"
    """``completions`` or ``chat``."""
    stop: tuple[str, ...] = ()
    seed: int | None = None
    use_n: bool = True
    """Ask for all samples in one request (``n``); false sends one request per sample."""
    concurrency: int = 32
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    """More servers of the same model beside ``base_url``: ``[{base_url = "http://gpu2:8000/v1", concurrency =
    64}, ...]`` (concurrency defaults to ``concurrency``). Each request goes to the live server with the most room;
    one that stops answering is given up and its requests go to the others."""
    timeout: float = 60.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    cache_dir: str = ""
    """Default ``$HARNESS_CACHE_DIR`` or ``~/.cache/harness``."""
    price_per_million_input: float = 0.0
    price_per_million_output: float = 0.0
    extra_body: dict[str, Any] = field(default_factory=dict)
    serve: str = ""
    """A command that serves ``model`` (a local model folder) on 127.0.0.1, started and stopped by the teacher, e.g.
    ``"/opt/vllm/bin/vllm serve {model} --host 127.0.0.1 --port {port} --max-model-len 256"``; ``base_url`` and
    ``api_key_env`` are then not used. Its log goes to ``<cache_dir>/serve/``."""
    serve_timeout: float = 600.0
    """Seconds to wait for the served model to answer before giving up (a large model may load for longer)."""
    batch: bool = False
    """Send the requests through the OpenAI Batch API (half price at OpenAI, results within 24 hours): one batch
    for the rationales, one for Zero-shot-CoT's answers, each resumed after a kill without being submitted
    twice; what a failed or expired batch did not answer is then asked directly."""
    batch_poll_seconds: float = 30.0
    batch_price_factor: float = 0.5
    """What batch tokens cost relative to the prices above (OpenAI: half)."""
    tokenizer: str = ""
    """The served model's tokenizer (folder or hub id). With ``top_logprobs``: it maps the server's tokens to ids
    (vLLM gives ids itself: ``return_tokens_as_token_ids`` is asked for), gives the EOS id, and lets the harness
    check that the student shares the vocabulary. Without it (a hosted model whose tokenizer is not published) the
    tokens are recorded as text only, for a strategy with ``cross_tokenizer = true``."""

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if self.endpoint not in ("completions", "chat"):
            problems.append(("endpoint", f"'{self.endpoint}': use \"completions\" or \"chat\""))
        problems += prompts.check_options(self, ("samples", "concurrency", "max_attempts", "max_tokens",
                                                 "answer_max_tokens"))
        if self.timeout <= 0:
            problems.append(("timeout", "must be positive"))
        if self.api_key_env and (not secrets.ENV_NAME.match(self.api_key_env)
                                 or secrets.looks_like_secret(self.api_key_env)):  # never echo it: it may be the key
            problems.append(("api_key_env", "must be the NAME of an environment variable (letters, digits, _), "
                                            "e.g. \"OPENAI_API_KEY\"; if you put the key itself here, remove it, "
                                            "export it (export OPENAI_API_KEY=...) and name the variable"))
        if secrets.url_secret(self.base_url):
            problems.append(("base_url", "holds a secret (user:password@, a key in its query, or a key itself); "
                                         "remove it from the URL and put the key in the environment variable named "
                                         "by api_key_env"))
        problems += [(path, "looks like a secret: keys never go in a recipe; put it in the environment variable "
                            "named by api_key_env") for path in secrets.secret_keys(self.extra_body, "extra_body")]
        for i, e in enumerate(self.endpoints):
            where = f"endpoints[{i}]"
            if not isinstance(e, dict) or not isinstance(e.get("base_url"), str) or not e.get("base_url"):
                problems.append((where, "needs base_url, e.g. { base_url = \"http://gpu2:8000/v1\", "
                                        "concurrency = 32 }"))
                continue
            unknown = [k for k in e if k not in ("base_url", "concurrency")]
            if unknown:
                problems.append((f"{where}.{unknown[0]}", "unknown key; an endpoint has base_url and concurrency"))
            if not isinstance(e.get("concurrency", 1), int) or e.get("concurrency", 1) < 1:
                problems.append((f"{where}.concurrency", "must be a whole number of at least 1"))
            if secrets.url_secret(e["base_url"]):
                problems.append((f"{where}.base_url", "holds a secret (credentials or a key); remove it from the "
                                                      "URL"))
        if self.endpoints and (self.serve or self.batch):
            problems.append(("endpoints", "several servers are for direct requests; leave out serve and batch"))
        if self.serve:
            problems += serve.command_problems(self.serve, "serve")
        if self.batch and self.serve:
            problems.append(("batch", "a server the teacher starts itself (serve) answers requests directly; set "
                                      "batch = false, or point base_url at a server with the Batch API"))
        if self.serve_timeout <= 0:
            problems.append(("serve_timeout", "must be positive (seconds)"))
        if self.batch_poll_seconds <= 0:
            problems.append(("batch_poll_seconds", "must be positive"))
        return problems


class Fatal(Exception):
    """A request no retry can fix."""
