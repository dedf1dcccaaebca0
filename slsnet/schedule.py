"""Training schedules: phases of epochs, each at an input size, supervised or adversarial.

A schedule is written ``SIZE:EPOCHS[:KIND],...``, e.g. ``64:60:sup,128:10:sup,128:15:gan``:
60 epochs at 64×64 with the supervised terms only, then 10 at 128, then 15 of the adversarial
game at 128. Most of what the network learns it can learn at a lower resolution, where an image
step costs several times less on a CPU; the last phase runs at the size the network is shipped
at. Epochs are numbered across the whole run, so a checkpoint after epoch ``e`` resumes in the
phase that holds epoch ``e + 1`` and the learning-rate schedule spans all phases.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("sup", "gan")  # supervised terms only (no discriminator) / the adversarial game


@dataclass(frozen=True)
class Phase:
    """``epochs`` epochs at ``size``×``size``; ``kind`` ``sup`` skips the discriminator."""

    size: int
    epochs: int
    kind: str = "gan"

    @property
    def adversarial(self) -> bool:
        """Whether the phase plays the adversarial game (trains D and G's adversarial term)."""
        return self.kind == "gan"

    def __str__(self) -> str:
        return f"{self.size}:{self.epochs}:{self.kind}"


def parse_schedule(text: str) -> list[Phase]:
    """``"64:60:sup,128:15"`` → phases; the kind defaults to ``gan``.

    Raises:
        ValueError: a malformed phase, a size that is not a positive multiple of 8 (the
            generator halves the input three times), or no epochs.
    """
    phases = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"--schedule phase {item.strip()!r} is not SIZE:EPOCHS[:KIND]")
        try:
            size, epochs = int(parts[0]), int(parts[1])
        except ValueError:
            raise ValueError(f"--schedule phase {item.strip()!r}: SIZE and EPOCHS are "
                             "whole numbers") from None
        kind = parts[2] if len(parts) == 3 else "gan"
        if kind not in KINDS:
            raise ValueError(f"--schedule phase {item.strip()!r}: KIND is one of {KINDS}")
        if size <= 0 or size % 8:
            raise ValueError(f"--schedule phase {item.strip()!r}: SIZE must be a positive "
                             "multiple of 8")
        if epochs <= 0:
            raise ValueError(f"--schedule phase {item.strip()!r}: EPOCHS must be positive")
        phases.append(Phase(size, epochs, kind))
    return phases


def total_epochs(phases: list[Phase]) -> int:
    """The run's epochs, all phases together."""
    return sum(p.epochs for p in phases)


def run_phases(args: dict) -> list[Phase]:
    """A run's phases from its ``args.json``: ``--schedule``, or one gan phase of its epochs."""
    return parse_schedule(args.get("schedule") or f"{args['size']}:{args['epochs']}:gan")


def phase_spans(phases: list[Phase]) -> list[tuple[int, int, Phase]]:
    """(first epoch, last epoch, phase) of each phase, epochs counted from 1 across the run."""
    spans, first = [], 1
    for phase in phases:
        spans.append((first, first + phase.epochs - 1, phase))
        first += phase.epochs
    return spans


def phase_of(phases: list[Phase], epoch: int) -> tuple[int, Phase]:
    """The index and phase that hold ``epoch`` (1-based, counted across the run)."""
    end = 0
    for i, phase in enumerate(phases):
        end += phase.epochs
        if epoch <= end:
            return i, phase
    raise ValueError(f"epoch {epoch} is past the schedule's {end} epochs")
