"""The ``harness`` command's error boundary: what a failure of the environment (a file that cannot be written, a
server that errs or cannot be reached, SIGTERM) becomes: one line naming the path or endpoint and the fix, not a
traceback. Kept apart from ``harness.cli`` (parsing and the commands)."""

from __future__ import annotations

import errno
import signal
import threading
from pathlib import Path
from typing import Any

from harness.errors import BadInputError


def write_output(path: Path, text: str, option: str) -> None:
    """A file a command was asked to write (``--json``, ``--report``): its folder made, and a path that cannot be
    written (a folder, no permission, a full disk) a message naming the option, not a traceback."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise BadInputError(f"{option} {path}: cannot write it ({exc.strerror or exc}); give a file path in a "
                            f"folder you can write") from None



WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR,
                errno.EEXIST, errno.EFBIG}


def write_failure(exc: BaseException) -> str | None:
    """A message for a file the run could not write (a read-only or full disk, a folder where a file should be,
    no permission), wherever it happened (run folder, teacher cache, sink, checkpoints); None for anything else."""
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        where = f" {exc.filename}" if exc.filename else ""
        return (f"cannot write{where}: {exc.strerror or exc}. Free some space, make the folder writable, or point "
                f"the recipe elsewhere (run.output_dir, teacher.cache_dir, the sink's dir)")
    text = str(exc)
    if isinstance(exc, RuntimeError) and ("No space left" in text or "failed writing" in text.lower()):
        return (f"cannot write a file: {text.splitlines()[0][:300]}. Free some space or point the recipe elsewhere "
                f"(run.output_dir)")
    return None


def http_failure(exc: BaseException) -> str | None:
    """A message for a server that answered with an error or could not be reached (an OpenAI-compatible API, a
    managed server that died, the Hub), naming the endpoint; None for anything else."""
    request = getattr(exc, "request", None)
    url = str(getattr(request, "url", "") or getattr(exc, "url", "") or "")
    status = getattr(getattr(exc, "response", None), "status_code", None) or getattr(exc, "status_code", None)
    names = {c.__module__.split(".")[0] for c in type(exc).__mro__}
    if not names & {"openai", "httpx", "requests", "urllib3", "aiohttp", "huggingface_hub"} and \
            not isinstance(exc, ConnectionError):
        return None
    where = url or "a server"
    detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if status:
        return (f"{where} answered HTTP {status} ({detail}); check that server, the recipe's base_url / model, "
                f"and the key its api_key_env names")
    return (f"cannot reach {where} ({type(exc).__name__}: {detail}); check that the server is running and the "
            f"recipe's base_url")


def stop_on_sigterm() -> dict[str, Any]:
    """SIGTERM (a scheduler's cancel, ``kill``) unwinds like Ctrl-C, so that servers the run started are stopped
    and partial stage folders left as they are for the resume (the default action would end the process at once,
    leaving a served model running). Only in the main thread, where Python delivers signals."""
    state: dict[str, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return state

    def stop(signum, frame):
        state["signal"] = signum
        raise KeyboardInterrupt

    state["previous"] = signal.signal(signal.SIGTERM, stop)
    return state
