"""Benchmarks: how fast, and how steady, the stream runs on this machine.

``speed`` (``python -m stream.bench``: the network, the frame path, GPU preprocessing, with
``gpu`` and ``file_mode``), ``temporal`` (``python -m stream.temporal_bench``: smoothing scored
on ``synth`` sweeps with ``temporal_metrics``, ``temporal_report``, ``temporal_response``),
``temporal_speed`` (``python -m stream.temporal_speed``: the live loop per smoothing mode), and
``measure`` (the timing loops they share).
"""
