"""Secrets for services (API keys, tokens) on the CLI: from an environment variable or a file.

In QGIS the adapters read QGIS's authentication database instead
(``EdificeAlgorithm.secret_from_authcfg``). A secret is never logged: pass it to
:class:`~edifice.core.acquire.http.HttpClient` as one of its ``secrets`` so every message is redacted."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError


def secret_from_env_or_file(env_var: str, file: str | os.PathLike | None = None) -> str | None:
    """The secret in ``file`` (first line, stripped) if given, else in ``$env_var``; None when neither.

    A named file that cannot be read is an error (its path is named, never its content)."""
    if file:
        path = Path(file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError("KEY_FILE", f"'{path}' cannot be read ({exc.strerror or exc}).",
                             "give a readable file holding the key on its first line.") from None
        secret = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not secret:
            raise InputError("KEY_FILE", f"'{path}' is empty.", "write the key on its first line.")
        return secret
    value = os.environ.get(env_var, "").strip()
    return value or None
