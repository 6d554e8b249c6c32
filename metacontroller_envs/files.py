"""Files written atomically: a crash mid-write leaves the previous file intact."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomically(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Call write(temp) on a temp file beside `path`, then rename it over `path`: a crash
    mid-write leaves the previous file intact. The file gets the permissions a plain
    open() would give it (0o666 less the umask), not the temp file's private 0o600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}"
    )
    os.close(handle)
    try:
        write(temp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically (see write_atomically)."""
    return write_atomically(path, lambda temp: Path(temp).write_text(text))


def write_json_atomically(path: str | Path, value: Any, indent: int = 1) -> Path:
    """Write `value` as JSON to `path` atomically: an interrupted run keeps the previous
    file whole, never half a record."""
    return write_text_atomically(path, json.dumps(value, indent=indent))
