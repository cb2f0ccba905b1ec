"""lvs.cf: grammar (text -> tree), model, keys (the key table), validate (tree -> model), writer.

Public API: ``load``/``loads`` read and validate a file, ``write`` gives its canonical text.
"""

from __future__ import annotations

import os

from .grammar import ConfigError, Diagnostic, parse
from .model import Config
from .validate import build
from .writer import digest, write

__all__ = ["ConfigError", "Diagnostic", "digest", "load", "loads", "write"]


def loads(text: str, path: str = "<string>") -> tuple[Config, list[Diagnostic]]:
    """Read lvs.cf text: the model and its warnings; every error at once as ConfigError."""
    root, diags = parse(text, path)
    cfg, more = build(root, path)
    diags += more
    errors = [d for d in diags if d.severity == "error"]
    warnings = sorted((d for d in diags if d.severity != "error"), key=lambda d: (d.line, d.col))
    if errors:
        raise ConfigError(errors, warnings)
    return cfg, warnings


def load(path: str | os.PathLike[str]) -> tuple[Config, list[Diagnostic]]:
    """Read an lvs.cf file; an unreadable file is a ConfigError at line 0."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise ConfigError([Diagnostic(name, 0, 0, f"cannot read file: {e.strerror or e}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # old files: bytes go through unchanged
    return loads(text, name)
