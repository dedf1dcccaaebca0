"""The browser demo (``python demo.py --gradio``): Live webcam, Video and Image uploads.

``runtime`` (the shared engine, serving, ``run_web``), ``live`` (the webcam and server-camera
handlers), ``files`` (uploads), ``app`` (the Gradio page, imported only when serving).
"""

from stream.web.runtime import Runtime, SharedEngine, WebOptions, run_web, serve

__all__ = ["Runtime", "SharedEngine", "WebOptions", "run_web", "serve"]
