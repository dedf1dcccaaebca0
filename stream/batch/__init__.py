"""Batch: segment a library of recordings, resumably, on this machine or a Ray cluster.

``plan`` (inputs, keys, options, what is done, the output folder), ``work`` (one recording, the
same code everywhere), ``runners`` (this process, worker processes, Ray actors; the
dispatcher), ``report`` (summary.csv, report.html), ``cli`` (``python -m stream.batch``).
The face is the planning part only, so that ``python -m stream.batch`` watches Ctrl-C before
torch is imported.
"""

from stream.batch.plan import Options, OutputFolder, Recording, find_recordings, key_for

__all__ = ["Options", "OutputFolder", "Recording", "find_recordings", "key_for"]
