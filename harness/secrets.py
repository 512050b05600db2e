"""Secrets (API keys) never land in files, logs or messages the harness writes, wherever a user put them.

A component that reads a secret tells this module its value (``register``); every writer in ``harness.io``, the
manifest, the run's messages and the CLI's error output pass text through ``redact``, which replaces each
registered value with ``[REDACTED]``. URLs are checked for credentials (``http://user:KEY@host``) and table keys
for secret-looking names (``api_key``, ``token``...) when a recipe is read.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

MASK = "[REDACTED]"
_SECRETS: set[str] = set()
_MIN_LENGTH = 6  # shorter values would redact ordinary words
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_KEY = re.compile(r"(api[_-]?key|secret|token|password|passwd|authorization|bearer|credential)", re.I)


def register(value: str | None) -> None:
    """Redact ``value`` from everything written from now on in this process."""
    if value and len(value) >= _MIN_LENGTH:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_obj(obj: Any) -> Any:
    """``obj`` with every registered secret masked in its strings (dicts, lists and tuples walked)."""
    if not _SECRETS:
        return obj
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_obj(k): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v) for v in obj)
    return obj


def url_has_credentials(url: str) -> bool:
    """True for ``scheme://user:password@host`` (or ``user@host``) URLs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return bool(parts.username or parts.password)


KEY_SHAPES = re.compile(
    r"(?<![A-Za-z0-9])("
    r"sk-[A-Za-z0-9_\-]{16,}"             # OpenAI, Anthropic (sk-ant-...), DeepSeek, many OpenAI-compatible servers
    r"|hf_[A-Za-z0-9]{20,}"               # Hugging Face
    r"|gsk_[A-Za-z0-9]{20,}"              # Groq
    r"|xai-[A-Za-z0-9]{20,}"              # xAI
    r"|r8_[A-Za-z0-9]{20,}"               # Replicate
    r"|AIza[0-9A-Za-z_\-]{30,}"           # Google
    r"|AKIA[0-9A-Z]{16}"                  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"
    r"|eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"  # a JWT
    r"|Bearer\s+[A-Za-z0-9._\-]{12,}"
    r")")
"""Values shaped like the keys of the common providers: a recipe holding one is refused, whatever key it is under."""
AUTH_KEY = re.compile(r"(^|[_\-.])auth($|[_\-.])|^key$", re.I)


def looks_like_secret(value: Any) -> bool:
    """Whether a value is shaped like an API key or token (``KEY_SHAPES``)."""
    return isinstance(value, str) and KEY_SHAPES.search(value) is not None


def secret_keys(table: Any, where: str) -> list[str]:
    """Paths in a free-form table that hold a secret: keys whose names say so (``api_key``, ``auth``...), and
    values shaped like a key wherever they are (``user``, ``metadata.*``, ``extra_headers.*``...)."""
    found = []
    if isinstance(table, dict):
        for k, v in table.items():
            path = f"{where}.{k}"
            if SECRET_KEY.search(str(k)) or AUTH_KEY.search(str(k)) or looks_like_secret(v):
                found.append(path)
            found += secret_keys(v, path)
    elif isinstance(table, (list, tuple)):
        for i, v in enumerate(table):
            path = f"{where}[{i}]"
            if looks_like_secret(v):
                found.append(path)
            found += secret_keys(v, path)
    return found


def url_secret(url: str) -> bool:
    """True for a URL that carries a secret: credentials (``user:key@host``), a query parameter named like one
    (``?api_key=...``, ``?key=...``), or a key-shaped value anywhere in it."""
    from urllib.parse import parse_qsl

    if url_has_credentials(url) or looks_like_secret(url):
        return True
    try:
        query = parse_qsl(urlsplit(url).query)
    except ValueError:
        return False
    return any(SECRET_KEY.search(k) or AUTH_KEY.search(k) or k.lower() in ("key", "sig", "signature")
               for k, _ in query)


def command_secret(command: str) -> bool:
    """True for a command line that passes a secret: an option named like one (``--api-key``, quoted or not), a
    ``NAME=value`` environment assignment whose name says it holds a secret (``env HF_TOKEN=...``), or a
    key-shaped word."""
    import shlex

    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    for word in words:
        name, eq, _ = word.partition("=")
        if word.startswith("-") and SECRET_KEY.search(name):
            return True
        if eq and (SECRET_KEY.search(name) or AUTH_KEY.search(name)):
            return True
        if looks_like_secret(word):
            return True
    return False
