"""``--time-budget``: a training run that stops cleanly before a deadline instead of being cut.

A machine lent for a few hours (a night, a shared server's slot) kills what runs past its end,
and the epoch in progress is lost. With a budget, the run starts an epoch only when it should
end in time: how long an epoch takes is known per (size, kind) from the run's own log (the time
between two consecutive epochs' lines; the gap across a stop and a resume is left out), and from
the epochs this process has run. A kind not timed yet runs when any budget is left.
"""

from __future__ import annotations

import argparse
import itertools
import re
import statistics
import time

GAP = 3.0  # an epoch-to-epoch time over GAP × the epoch's own training time spans a stop
_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """``"2h40m"``, ``"90m"``, ``"1.5h"``, ``"45s"`` → seconds.

    Raises:
        ValueError: anything else (a bare number has no unit to read it in).
    """
    cleaned = text.strip().lower().replace(" ", "")
    parts = _PART.findall(cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(f"{text!r} is not a duration such as 2h40m, 90m or 45s")
    return sum(float(n) * _UNIT[u] for n, u in parts)


def duration_arg(text: str) -> float:
    """:func:`parse_duration` as an argparse ``type``: a bad duration is argparse's error line."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def epoch_seconds(log: list[dict]) -> dict[tuple[int, str], float]:
    """Median wall seconds of an epoch per (size, kind), from consecutive epochs' log lines."""
    spans: dict[tuple[int, str], list[float]] = {}
    for before, record in itertools.pairwise(log):
        wall = record["time"] - before["time"]
        if record["epoch"] == before["epoch"] + 1 and 0 < wall <= GAP * record["train_seconds"]:
            spans.setdefault((record["size"], record["kind"]), []).append(wall)
    return {key: statistics.median(walls) for key, walls in spans.items()}


class TimeBudget:
    """Whether the next epoch fits in what is left of ``seconds`` from now.

    Args:
        seconds: the budget, counted from construction.
        log: the run's log records so far (a resumed run knows its epochs' times at once).
    """

    def __init__(self, seconds: float, log: list[dict] | None = None) -> None:
        self.seconds = seconds
        self.start = time.monotonic()
        self.known = epoch_seconds(log or [])

    def left(self) -> float:
        """Seconds of the budget left."""
        return self.seconds - (time.monotonic() - self.start)

    def estimate(self, size: int, kind: str) -> float | None:
        """How long an epoch of this size and kind takes, or None when none was timed."""
        return self.known.get((size, kind))

    def fits(self, size: int, kind: str) -> bool:
        """Whether an epoch of this size and kind should end within the budget."""
        estimate = self.estimate(size, kind)
        return self.left() > (estimate if estimate is not None else 0.0)

    def timed(self, size: int, kind: str, seconds: float) -> None:
        """An epoch of this size and kind took ``seconds`` (the latest time is kept)."""
        self.known[(size, kind)] = seconds
