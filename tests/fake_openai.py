"""A small OpenAI-compatible server on 127.0.0.1 for tests and benchmarks, with injectable faults.

Completions are deterministic functions of the prompt: a stage-2 prompt (ending in an answer trigger) gets
`` 42.``; any other prompt gets ``Rationale <k> for <hash>.`` where k is the choice index. Faults are scripted
per request number (``faults={3: "429", 5: "drop"}``) or drawn with a seeded rate (``fault_rate``), from:
``429`` (with Retry-After), ``500``, ``timeout`` (sleeps past the client's timeout), ``truncated`` (half a JSON
body), ``drop`` (closes the connection). ``api_key`` set: other keys get 401. ``models`` set: others get 404.
``max_n`` caps the choices returned, like servers that ignore ``n``.

The Batch API too: ``POST /v1/files`` (purpose ``batch``), ``POST /v1/batches``, ``GET /v1/batches[/{id}]``,
``GET /v1/files/{id}/content``. A batch stays ``in_progress`` for ``batch_seconds``, then completes with an output
file of the same completions (``batch_outcome = "expired"`` or ``"failed"`` ends it so, without output;
``batch_missing`` leaves that many lines out of the output, like requests a batch did not get to).

Run standalone: ``python tests/fake_openai.py --port 8123 --latency 0.1``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import threading
import time
from collections import Counter

from aiohttp import web

FAULTS = ("429", "500", "timeout", "truncated", "drop")


class FakeOpenAI:
    def __init__(self, latency: float = 0.0, faults: dict[int, str] | None = None, fault_rate: float = 0.0,
                 fault_kinds: tuple[str, ...] = FAULTS, seed: int = 0, api_key: str | None = None,
                 models: tuple[str, ...] = (), max_n: int | None = None, retry_after: float = 0.05,
                 hang: float = 5.0, poison: str | None = None, logprobs: bool = True, batch_seconds: float = 0.5,
                 batch_outcome: str = "completed", batch_missing: int = 0,
                 signal_fault: tuple[str, str] | None = None, batch_fault: tuple[str, int] | None = None,
                 batch_duplicates: int = 0, die_after: int | None = None, score_fault: bool = False):
        self.latency, self.faults, self.fault_rate, self.fault_kinds = latency, dict(faults or {}), fault_rate, fault_kinds
        self.rng = random.Random(seed)
        self.api_key, self.models, self.max_n = api_key, models, max_n
        self.retry_after, self.hang = retry_after, hang
        self.poison = poison
        """Any prompt containing this text always gets a 500."""
        self.logprobs = logprobs
        """Answer ``logprobs`` requests (false: ignore them, as servers without support do)."""
        self.batch_seconds, self.batch_outcome, self.batch_missing = batch_seconds, batch_outcome, batch_missing
        self.batch_fault, self.batch_duplicates = batch_fault, batch_duplicates
        """(path prefix, status): Batch API calls under that path answer that HTTP status; and how many output lines
        of a batch come twice, the second time with another text."""
        self.signal_fault = signal_fault
        """(text, kind): prompts containing ``text`` get top-k log-probabilities broken by ``kind``: ``nan``,
        ``inf`` (+inf), ``-inf`` (a legitimate probability 0) or ``oov`` (a token id far outside any vocabulary)."""
        self.die_after, self.score_fault = die_after, score_fault
        """The process exits (as a server that crashes) on the completion request after this many; requests for
        prompt log-probabilities (a teacher scoring text) get a 500."""
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batches_created = 0
        self.requests = 0
        self.served = Counter()  # successful responses by path
        self.prompts: list[str] = []  # prompts of successful responses, in order
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # HTTP ---------------------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        number = self.requests
        if self.die_after is not None and number > self.die_after:
            os._exit(1)  # the server process dies mid-run, connections and all
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                                "code": "invalid_api_key"}}, status=401)
        body = await request.json()
        if self.models and body.get("model") not in self.models:
            return web.json_response({"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                                "type": "invalid_request_error", "code": "model_not_found"}},
                                     status=404)
        fault = self.faults.get(number)
        prompt_text = body["messages"][-1]["content"] if "messages" in body else body.get("prompt", "")
        if self.poison and isinstance(prompt_text, str) and self.poison in prompt_text:
            fault = "500"
        if self.score_fault and body.get("prompt_logprobs"):
            fault = "500"
        if fault is None and self.fault_rate and self.rng.random() < self.fault_rate:
            fault = self.rng.choice(self.fault_kinds)
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault == "429":
            return web.json_response({"error": {"message": "Rate limit reached", "type": "rate_limit"}}, status=429,
                                     headers={"Retry-After": str(self.retry_after)})
        if fault == "500":
            return web.json_response({"error": {"message": "internal error", "type": "server_error"}}, status=500)
        if fault == "timeout":
            await asyncio.sleep(self.hang)
        if fault == "drop":
            request.transport.close()
            return web.Response(status=500)
        chat = request.path.endswith("/chat/completions")
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        if isinstance(prompt, list):  # token ids (lm-eval's local-completions sends them)
            prompt = " ".join(str(t) for t in prompt)
        n = int(body.get("n") or 1)
        if self.max_n:
            n = min(n, self.max_n)
        texts = [self.complete(prompt, k) for k in range(n)]
        payload = self.payload(body["model"], texts, chat, prompt)
        k = int(body.get("top_logprobs") or 0) if chat else int(body.get("logprobs") or 0)
        if self.logprobs and k:
            for choice, text in zip(payload["choices"], texts):
                choice["logprobs"] = self.token_logprobs(text, k, chat, bool(body.get("return_tokens_as_token_ids")))
                if self.signal_fault and self.signal_fault[0] in prompt:
                    self.break_logprobs(choice["logprobs"], self.signal_fault[1], chat)
        if fault == "truncated":
            raw = json.dumps(payload)
            return web.Response(text=raw[: len(raw) // 2], content_type="application/json")
        self.served[request.path] += 1
        self.prompts.append(prompt)
        return web.json_response(payload)

    @staticmethod
    def complete(prompt: str, k: int) -> str:
        if prompt.rstrip().endswith(" is"):
            return " 42."
        if "Sub-question N:" in prompt:  # a decomposition prompt
            return (f"Sub-question 1: What comes first ({k})?\nAnswer 1: 1 + 1 = 2.\n"
                    "Sub-question 2: What comes next?\nAnswer 2: 2 + 2 = 4.\nThe answer is 4.")
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
        return f" Rationale {k} for {digest}."

    @staticmethod
    def token_logprobs(text: str, k: int, chat: bool, as_ids: bool) -> dict:
        """Asked for ids (``return_tokens_as_token_ids``): word tokens; each word's id is a stable hash; its top-k:
        itself (-0.1) and k-1 neighbours (-2.5, ...). Else as a hosted API answers: text pieces (a word with its
        leading space, one digit, one other character) that concatenate to the text, with their UTF-8 bytes
        (chat), each one's top-k itself (-0.1) and k-1 common pieces (-2.5, ...)."""
        if not as_ids:
            return FakeOpenAI.text_logprobs(text, k, chat)
        words = text.split()
        ids = [3 + int(hashlib.sha256(w.encode()).hexdigest(), 16) % 40 for w in words]
        name = (lambda i: f"token_id:{i}") if as_ids else (lambda i: f"w{i}")
        tops = [[(name(i), -0.1)] + [(name(3 + (i + j) % 40), -2.5 - j) for j in range(1, k)] for i in ids]
        if chat:
            return {"content": [{"token": name(i), "logprob": -0.1, "bytes": None,
                                 "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top]}
                                for i, top in zip(ids, tops)]}
        return {"tokens": [name(i) for i in ids], "token_logprobs": [-0.1] * len(ids),
                "top_logprobs": [dict(top) for top in tops], "text_offset": list(range(len(ids)))}

    @staticmethod
    def text_logprobs(text: str, k: int, chat: bool) -> dict:
        pieces = re.findall(r"\s*[A-Za-z]+|\s*\d|\s*[^\sA-Za-z\d]|\s+$", text)
        assert "".join(pieces) == text
        common = [" the", " is", " 4", "s", ".", " a", "2", " and", " of", " to", ",", " so", "1", "3", " we"]
        tops = [[(p, -0.1)] + [(c, -2.5 - j) for j, c in enumerate([c for c in common if c != p][: k - 1])]
                for p in pieces]
        if chat:
            return {"content": [{"token": p, "logprob": -0.1, "bytes": list(p.encode()),
                                 "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                                                  for t, lp in top]} for p, top in zip(pieces, tops)]}
        return {"tokens": pieces, "token_logprobs": [-0.1] * len(pieces),
                "top_logprobs": [dict(top) for top in tops], "text_offset": list(range(len(pieces)))}

    @staticmethod
    def break_logprobs(logprobs: dict, kind: str, chat: bool) -> None:
        """The second alternative of the first token made NaN, +inf, -inf or an out-of-vocabulary id."""
        value = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}.get(kind)
        if chat:
            alternative = logprobs["content"][0]["top_logprobs"][1]
            if value is None:
                alternative["token"] = "token_id:9999999"
            else:
                alternative["logprob"] = value
        else:
            top = logprobs["top_logprobs"][0]
            name = list(top)[1]
            if value is None:
                top["token_id:9999999"] = top.pop(name)
            else:
                top[name] = value

    @staticmethod
    def payload(model: str, texts: list[str], chat: bool, prompt: str) -> dict:
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": sum(len(t.split()) for t in texts)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                       for i, t in enumerate(texts)]
            return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                    "choices": choices, "usage": usage}
        choices = [{"index": i, "text": t, "finish_reason": "stop", "logprobs": None} for i, t in enumerate(texts)]
        return {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": model,
                "choices": choices, "usage": usage}

    # The Batch API --------------------------------------------------------------------------------------------

    def _batch_refusal(self, request: web.Request) -> web.Response | None:
        if self.batch_fault and request.path.startswith(self.batch_fault[0]):
            return web.json_response({"error": {"message": "refused by the test"}}, status=self.batch_fault[1])
        return None

    async def upload(self, request: web.Request) -> web.Response:
        if (refused := self._batch_refusal(request)) is not None:
            return refused
        form = await request.post()
        if form.get("purpose") != "batch":
            return web.json_response({"error": {"message": "purpose must be batch"}}, status=400)
        data = form["file"].file.read()
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = data
        return web.json_response({"id": file_id, "object": "file", "bytes": len(data), "purpose": "batch",
                                  "filename": form["file"].filename, "created_at": int(time.time()), "status": "processed"})

    async def create_batch(self, request: web.Request) -> web.Response:
        if (refused := self._batch_refusal(request)) is not None:
            return refused
        body = await request.json()
        if body.get("input_file_id") not in self.files:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        self.batches_created += 1
        batch_id = f"batch-{self.batches_created}"
        lines = [json.loads(line) for line in self.files[body["input_file_id"]].decode().splitlines() if line.strip()]
        self.batches[batch_id] = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"],
                                  "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                                  "created_at": int(time.time()), "_started": time.monotonic(), "_lines": lines,
                                  "status": "in_progress", "output_file_id": None, "error_file_id": None,
                                  "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
        return web.json_response(self._batch_view(batch_id))

    def _batch_view(self, batch_id: str) -> dict:
        b = self.batches[batch_id]
        if b["status"] == "in_progress":
            done = (time.monotonic() - b["_started"]) / max(self.batch_seconds, 1e-6)
            total = b["request_counts"]["total"]
            b["request_counts"]["completed"] = min(total, int(done * total))
            if done >= 1:
                self._finish_batch(b)
        return {k: v for k, v in b.items() if not k.startswith("_")}

    def _finish_batch(self, b: dict) -> None:
        if self.batch_outcome != "completed":
            b["status"] = self.batch_outcome
            b["request_counts"]["completed"] = 0
            return
        out = []
        for line in b["_lines"][: len(b["_lines"]) - self.batch_missing]:
            body = line["body"]
            chat = line["url"].endswith("/chat/completions")
            prompt = body["messages"][-1]["content"] if chat else body["prompt"]
            texts = [self.complete(prompt, k) for k in range(int(body.get("n") or 1))]
            self.prompts.append(prompt)
            out.append({"id": f"req-{len(out)}", "custom_id": line["custom_id"], "error": None,
                        "response": {"status_code": 200, "request_id": f"r{len(out)}",
                                     "body": self.payload(body["model"], texts, chat, prompt)}})
        for o in out[: self.batch_duplicates]:  # the same request answered twice, differently
            twin = json.loads(json.dumps(o))
            for choice in twin["response"]["body"]["choices"]:
                if "text" in choice:
                    choice["text"] += " (another answer)"
                else:
                    choice["message"]["content"] += " (another answer)"
            out.append(twin)
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = "".join(json.dumps(o) + "\n" for o in out).encode()
        b.update(status="completed", output_file_id=file_id)
        b["request_counts"].update(completed=len(out), failed=0)

    async def get_batch(self, request: web.Request) -> web.Response:
        batch_id = request.match_info["batch_id"]
        if batch_id not in self.batches:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        return web.json_response(self._batch_view(batch_id))

    async def list_batches(self, request: web.Request) -> web.Response:
        data = [self._batch_view(b) for b in reversed(list(self.batches))]
        return web.json_response({"object": "list", "data": data, "has_more": False,
                                  "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})

    async def file_content(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if file_id not in self.files:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=self.files[file_id], content_type="application/octet-stream")

    # Running ------------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self.handle)
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{file_id}/content", self.file_content)
        app.router.add_post("/v1/batches", self.create_batch)
        app.router.add_get("/v1/batches", self.list_batches)
        app.router.add_get("/v1/batches/{batch_id}", self.get_batch)
        app.router.add_get("/stats", self.stats)
        app.router.add_get("/health", lambda request: web.Response(text="ok"))
        return app

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "served": dict(self.served),
                                  "batches_created": self.batches_created})

    async def _serve(self, port: int, started: threading.Event) -> None:
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        self.port = runner.addresses[0][1]
        self._runner = runner
        started.set()

    def start(self, port: int = 0) -> "FakeOpenAI":
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve(port, started))
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return self

    def stop(self) -> None:
        """Stop serving (a second call does nothing: a test may kill a server mid-run)."""
        if self._loop:
            loop, self._loop = self._loop, None
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--batch-seconds", type=float, default=0.5)
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--model", help="ignored: what a server command template names ({model})")
    parser.add_argument("--generation-config", help="ignored: JSON, as vLLM's --override-generation-config takes")
    parser.add_argument("--die-after", type=int, help="exit after this many completion requests (a crash)")
    parser.add_argument("--score-fault", action="store_true", help="answer 500 to prompt log-probability requests")
    args = parser.parse_args()
    server = FakeOpenAI(latency=args.latency, batch_seconds=args.batch_seconds, die_after=args.die_after,
                        score_fault=args.score_fault).start(args.port)
    if args.port_file:
        with open(args.port_file, "w") as f:
            f.write(str(server.port))
    print(f"listening on {server.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
