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


def secret_keys(table: Any, where: str) -> list[str]:
    """Paths of keys in a free-form table whose names say they hold a secret."""
    found = []
    if isinstance(table, dict):
        for k, v in table.items():
            path = f"{where}.{k}"
            if SECRET_KEY.search(str(k)):
                found.append(path)
            found += secret_keys(v, path)
    return found
