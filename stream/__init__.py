"""Real-time SLSNet segmentation of dermatoscope video.

source → preprocess → engine → smoothing → render → sinks, wired by ``stream.pipeline``.
"""
