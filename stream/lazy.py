"""Package members imported on first use (PEP 562), for members that need an optional library.

``stream.sources`` and ``stream.outputs`` keep their PyAV members (file decoding, video
encoding) behind :func:`lazy_members`, so that a machine without PyAV imports the rest.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module


def lazy_members(package: str, members: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: ``members`` maps a name to the module holding it.

    The first access imports that module and keeps the value in the package, so later ones are
    plain attribute reads.
    """

    def __getattr__(name: str) -> object:
        module = members.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
