"""Reports the commands write for other tools to read."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(path: str | Path, data: dict) -> str | None:
    """Write ``data`` to ``path`` as indented JSON; the error line to print when it cannot."""
    try:
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        return f"error: cannot write {path}: {exc}"
    return None
