"""The web demo's page: one ``gr.Blocks`` with Live, Video, Image and Server camera tabs.

Only layout and wiring live here; every handler is a plain function of :mod:`stream.web.live` or
:mod:`stream.web.files` that takes the shared :class:`stream.web.runtime.Runtime`. Elements that the
browser tests look for carry an ``elem_id``.
"""

from __future__ import annotations

import functools
import inspect

import gradio as gr

from stream.errors import StreamError
from stream.smoothing import CHOICES
from stream.web.files import segment_image, segment_video
from stream.web.live import browser_frame, server_camera

# Gradio deletes its cached uploads and results every CACHE_SWEEP_S seconds once they are older
# than CACHE_AGE_S, and everything when the server stops: live frames alone would fill the disk.
CACHE_SWEEP_S, CACHE_AGE_S = 60, 600
PREVIEW_HEIGHT = 360  # px, the height of the video panes
CSS = "#live-readout {font-family: ui-monospace, monospace; font-size: 0.9em}"


def user_errors(fn):
    """Turn the errors a user can fix into a message in the page (``gr.Error``).

    Generator functions stay generators, so that Gradio still streams what they yield.
    """
    target = fn.func if isinstance(fn, functools.partial) else fn
    if inspect.isgeneratorfunction(target):

        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except StreamError as exc:
                raise gr.Error(str(exc)) from None

        return streaming

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StreamError as exc:
            raise gr.Error(str(exc)) from None

    return wrapper


def header(runtime) -> str:
    """The line under the title: model, device, and the random-weights warning."""
    engine = runtime.engine
    text = (f"# SLSNet live — skin lesion segmentation\n"
            f"Model: SLSNet generator, {engine.size}×{engine.size} input, **{engine.name}**.")
    if runtime.weights_note:
        text += f"\n\n<h3 style='color:#c00'>⚠ {runtime.weights_note}</h3>"
    if runtime.options.open_warning:
        text += (f"\n\n<div id='open-warning' style='background:#c00;color:#fff;padding:0.6em;"
                 f"font-weight:bold'>⚠ {runtime.options.open_warning}</div>")
    return text


def live_tab(runtime) -> None:
    """The browser webcam streamed through the engine and back."""
    options = runtime.options
    with gr.Row(equal_height=True):
        camera = gr.Image(
            label="Browser camera", sources=["webcam"], streaming=True, type="numpy",
            elem_id="live-camera", height=PREVIEW_HEIGHT,
            webcam_options=gr.WebcamOptions(mirror=False),  # a dermatoscope is not a mirror
        )
        output = gr.Image(label="Segmentation", elem_id="live-output", streaming=True,
                          format="jpeg", interactive=False, height=PREVIEW_HEIGHT)
    with gr.Row():
        smooth = gr.Dropdown(list(CHOICES), value=options.smooth, label="Smoothing",
                             elem_id="live-smooth")
        threshold = gr.Slider(0.05, 0.95, value=runtime.engine.threshold, step=0.05,
                              label="Threshold", elem_id="live-threshold")
        hud = gr.Checkbox(value=options.hud, label="HUD in the frame", elem_id="live-hud")
    readout = gr.Markdown("Press **Record** to stream your camera.", elem_id="live-readout")
    session = gr.State(None)
    camera.stream(
        functools.partial(browser_frame, runtime=runtime),
        inputs=[camera, session, smooth, threshold, hud],
        outputs=[output, readout, session],
        stream_every=options.stream_every,
        time_limit=options.time_limit,
        concurrency_limit=options.concurrency,
        show_progress="hidden",
        api_name="live",
    )


def video_tab(runtime) -> None:
    """A recording run through the file pipeline of ``demo.py``."""
    def run_video(upload, smooth, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        return segment_video(upload, smooth, progress, runtime=runtime,
                             owner=runtime.visitors.owner(request))

    with gr.Row():
        with gr.Column():
            upload = gr.File(label="Recording (MP4, MKV, MOV, AVI, …)", elem_id="video-upload")
            smooth = gr.Dropdown(list(CHOICES), value=runtime.options.smooth, label="Smoothing",
                                 elem_id="video-smooth")
            run = gr.Button("Segment video", variant="primary", elem_id="video-run")
            summary = gr.Dataframe(headers=["", "value"], label="Summary", elem_id="video-summary",
                                   interactive=False, wrap=True)
        with gr.Column():
            video = gr.Video(label="Masked video", elem_id="video-output", interactive=False,
                             height=PREVIEW_HEIGHT)
            masks = gr.File(label="Mask PNGs (zip)", elem_id="video-masks")
            table = gr.File(label="Per-frame CSV", elem_id="video-csv")
    run.click(
        user_errors(run_video),
        inputs=[upload, smooth],
        outputs=[video, masks, table, summary],
        api_name="segment_video",
        concurrency_limit=1,  # a file job takes the CPU; the next waits in the queue
    )


def image_tab(runtime) -> None:
    """A still photo: overlay, mask PNG and lesion area."""
    def run_image(photo, threshold, request: gr.Request):
        return segment_image(photo, threshold, runtime=runtime,
                             owner=runtime.visitors.owner(request))

    with gr.Row():
        with gr.Column():
            photo = gr.Image(label="Dermoscopic photo", sources=["upload", "clipboard"],
                             type="filepath", elem_id="image-input", height=PREVIEW_HEIGHT)
            threshold = gr.Slider(0.05, 0.95, value=runtime.engine.threshold, step=0.05,
                                  label="Threshold", elem_id="image-threshold")
            run = gr.Button("Segment image", variant="primary", elem_id="image-run")
        with gr.Column():
            overlay = gr.Image(label="Overlay", elem_id="image-overlay", interactive=False,
                               format="png", height=PREVIEW_HEIGHT)
            mask = gr.File(label="Mask PNG (0/255)", elem_id="image-mask")
            area = gr.Markdown(elem_id="image-area")
    run.click(
        user_errors(run_image),
        inputs=[photo, threshold],
        outputs=[overlay, mask, area],
        api_name="segment_image",
        preprocess=False,  # the handler decodes and checks the upload itself
    )


def server_camera_tab(runtime) -> None:
    """The server's own camera through the capture pipeline (``--camera N --gradio``)."""
    gr.Markdown(f"The camera attached to the server (`{runtime.options.camera}`), captured and "
                "segmented on the server; the page only shows the result.")
    with gr.Row():
        start = gr.Button("Start", variant="primary", elem_id="server-start")
        stop = gr.Button("Stop", elem_id="server-stop")
    output = gr.Image(label="Server camera", elem_id="server-output", streaming=True,
                      format="jpeg", interactive=False, height=PREVIEW_HEIGHT)
    readout = gr.Markdown(elem_id="server-readout")
    event = start.click(
        user_errors(functools.partial(server_camera, runtime=runtime)),
        outputs=[output, readout],
        api_name="server_camera",
        show_progress="hidden",
        concurrency_limit=runtime.options.concurrency,
    )
    stop.click(None, cancels=[event])


def build_app(runtime) -> gr.Blocks:
    """The whole page for one process's :class:`stream.web.runtime.Runtime`."""
    with gr.Blocks(title="SLSNet live", delete_cache=(CACHE_SWEEP_S, CACHE_AGE_S)) as app:
        gr.Markdown(header(runtime), elem_id="header")
        with gr.Tabs():
            with gr.Tab("Live", id="live"):
                live_tab(runtime)
            with gr.Tab("Video", id="video"):
                video_tab(runtime)
            with gr.Tab("Image", id="image"):
                image_tab(runtime)
            if runtime.options.camera is not None:
                with gr.Tab("Server camera", id="server"):
                    server_camera_tab(runtime)
        visitors = runtime.visitors

        def opened(request: gr.Request) -> None:
            visitors.page_opened(visitors.owner(request), request.session_hash)

        def closed(request: gr.Request) -> None:
            visitors.page_closed(visitors.owner(request), request.session_hash)

        app.load(opened, api_visibility="private")
        app.unload(closed)
    return app
