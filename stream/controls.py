"""What a window may do to a running pipeline: stop, pause, toggle the overlay and the HUD.

The window (:class:`stream.outputs.WindowSink`) gets these controls, not the pipeline.
"""

from __future__ import annotations

import numpy as np

from stream.frame import Frame


class PipelineControls:
    """The :class:`~stream.outputs.window.Controls` a window gets: stop, pause, overlay toggles."""

    def __init__(self, pipeline) -> None:
        self._pipeline = pipeline

    @property
    def paused(self) -> bool:
        """Whether processing is paused."""
        return self._pipeline.paused.is_set()

    def stop(self) -> None:
        """Soft stop (see :meth:`Pipeline.request_stop`)."""
        self._pipeline.request_stop()

    def toggle_pause(self) -> bool:
        """Pause or resume; True when now paused."""
        return self._pipeline.toggle_pause()

    def toggle_mask(self) -> None:
        """Show or hide the mask overlay."""
        renderer = self._pipeline.renderer
        renderer.show_mask = not renderer.show_mask

    def toggle_hud(self) -> None:
        """Show or hide the HUD."""
        renderer = self._pipeline.renderer
        renderer.show_hud = not renderer.show_hud

    def redraw(self, frame: Frame) -> np.ndarray:
        """``frame`` drawn with the toggles now in force."""
        return self._pipeline.renderer.render(frame, self._pipeline.stats.snapshot())
