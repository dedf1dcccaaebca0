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
from stream.web.live import browser_frame, server_camera, stopped_readout

# Gradio deletes its cached uploads and results every CACHE_SWEEP_S seconds once they are older
# than CACHE_AGE_S, and everything when the server stops: live frames alone would fill the disk.
CACHE_SWEEP_S, CACHE_AGE_S = 60, 600
PREVIEW_HEIGHT = 360  # px, the height of the video panes
PANES = ("live-camera", "live-output", "video-output", "image-input", "image-overlay",
         "server-output")  # the picture panes: their labels sit above, not on, the picture
CSS = ("#live-readout {font-family: ui-monospace, monospace; font-size: 0.9em}\n"
       + ", ".join(f"#{pane} [data-testid='block-label']" for pane in PANES)
       + " {position: static; margin-bottom: var(--spacing-sm)}")
NOT_A_DEVICE = ("A research tool, **not a medical device**: its masks are not a diagnosis and "
                "must not guide treatment.")
SMOOTHING_INFO = ("how masks carry over between frames. auto: flow (every frame through the "
                  "network) unless a live camera on the CPU outpaces the network, then keyframe "
                  "(the network on some frames, optical flow between); off: every frame on its "
                  "own")
THRESHOLD_INFO = "lesion probability above which a pixel is lesion (lower: larger masks)"


def user_errors(fn, problems: dict[str, str] | None = None):
    """Turn the errors a user can fix into a message in the page (``gr.Error``).

    The message is also kept in ``problems`` under the page's session (when ``fn`` takes a
    ``gr.Request``), for the line that stays in the page (:func:`problem_line`). Refusals print
    no traceback on the server's console. Generator functions stay generators, so that Gradio
    still streams what they yield.
    """
    target = fn.func if isinstance(fn, functools.partial) else fn

    def refuse(exc: StreamError, args, kwargs) -> gr.Error:
        request = next((a for a in (*args, *kwargs.values()) if isinstance(a, gr.Request)), None)
        if problems is not None and request is not None and request.session_hash:
            problems[request.session_hash] = str(exc)
        return gr.Error(str(exc), print_exception=False)

    if inspect.isgeneratorfunction(target):

        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except StreamError as exc:
                raise refuse(exc, args, kwargs) from None

        return streaming

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StreamError as exc:
            raise refuse(exc, args, kwargs) from None

    return wrapper


def problem_line(event, line: gr.Markdown, problems: dict[str, str]) -> None:
    """Keep the reason of a failed run in ``line`` (the pop-up vanishes); clear it on success."""
    def failed(request: gr.Request) -> str:
        reason = problems.pop(request.session_hash, None) or "the run failed"
        return f"⚠ **Not done:** {reason}"

    event.failure(failed, outputs=line, api_visibility="private", show_progress="hidden")
    event.success(lambda: "", outputs=line, api_visibility="private", show_progress="hidden")


def header(runtime) -> str:
    """The line under the title: model, device, and the random-weights warning."""
    engine = runtime.engine
    text = (f"# SLSNet live — skin lesion segmentation\n"
            f"Model: SLSNet generator, {engine.size}×{engine.size} input, **{engine.name}**. "
            f"Pick a tab: **Live** for a camera, **Video** for a recording, **Image** for a "
            f"photo.  \n{NOT_A_DEVICE}")
    if runtime.weights_note:
        text += f"\n\n<h3 style='color:#c00'>⚠ {runtime.weights_note}</h3>"
    if runtime.options.open_warning:
        text += (f"\n\n<div id='open-warning' style='background:#c00;color:#fff;padding:0.6em;"
                 f"font-weight:bold'>⚠ {runtime.options.open_warning}</div>")
    return text


# The page times camera → shown with its own clock (performance.now() ms). GRAB_JS runs on each
# frame just before the handler's inputs are gathered: the grab time travels with the frame.
# SHOWN_JS runs when that time comes back with the frame's result; the result's picture is in the
# <img> by then, and on screen at the first animation frame after it has loaded. It returns
# "GRAB_MS LAG_MS" (nothing after 5 s: a hidden tab, a picture that never loaded), which goes
# up with the next frame (stream.web.live.LiveSession.page_measured).
GRAB_JS = "() => performance.now()"
SHOWN_JS = """async (grabbed) => {
  if (typeof grabbed !== 'number') return undefined;
  const start = performance.now();
  for (;;) {
    await new Promise(requestAnimationFrame);
    const img = document.querySelector('#live-output img');
    if (img && img.complete && img.naturalWidth) {
      const now = performance.now();
      return `${grabbed} ${(now - grabbed).toFixed(1)}`;
    }
    if (performance.now() - start > 5000) return undefined;
  }
}"""

LIVE_IDLE = ("**Not streaming.** Click the camera pane to allow the webcam, then press the "
             "record button under it; press stop to end. Settings apply from the next frame.")


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
                             info=SMOOTHING_INFO, elem_id="live-smooth")
        threshold = gr.Slider(0.05, 0.95, value=runtime.engine.threshold, step=0.05,
                              label="Threshold", info=THRESHOLD_INFO, elem_id="live-threshold")
        hud = gr.Checkbox(value=options.hud, label="HUD in the frame",
                          info="speed and settings drawn into the returned frames",
                          elem_id="live-hud")
    readout = gr.Markdown(LIVE_IDLE, elem_id="live-readout")
    session = gr.State(None)
    # camera → shown, timed in the page (GRAB_JS, SHOWN_JS): the grab time, the grab time back
    # with the result (in the page, though unseen, so that its change event fires), the lag
    grabbed = gr.Number(visible=False)
    returned = gr.Number(visible="hidden", elem_id="live-grabbed")
    shown = gr.Textbox(visible=False)
    streaming = {"stream_every": options.stream_every, "time_limit": options.time_limit}
    # first on each frame, so that the handler gets this frame's grab time
    camera.stream(None, js=GRAB_JS, outputs=grabbed, api_visibility="private", **streaming)
    camera.stream(
        functools.partial(browser_frame, runtime=runtime),
        inputs=[camera, session, smooth, threshold, hud, grabbed, shown],
        outputs=[output, readout, session, returned],
        concurrency_limit=options.concurrency,
        show_progress="hidden",
        api_name="live",
        **streaming,
    )
    returned.change(None, js=SHOWN_JS, inputs=returned, outputs=shown, api_visibility="private",
                    show_progress="hidden")

    def stopped(state):  # the browser says nothing when streaming stops: notice the silence
        text = stopped_readout(state)
        return gr.skip() if text is None else text

    gr.Timer(1.0).tick(stopped, inputs=session, outputs=readout, api_visibility="private",
                       show_progress="hidden")


def video_tab(runtime) -> None:
    """A recording run through the file pipeline of ``demo.py``."""
    def run_video(upload, smooth, threshold, hud, request: gr.Request,
                  progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
        return segment_video(upload, smooth, progress, threshold, hud, runtime=runtime,
                             owner=runtime.visitors.owner(request))

    gr.Markdown("Upload a recording (MP4, MKV, MOV, AVI, …) and press **Segment video**: every "
                "frame goes through the network as in `demo.py --video`. Photos go in the "
                "**Image** tab.", elem_id="video-guide")
    with gr.Row():
        with gr.Column():
            upload = gr.File(label="Recording (MP4, MKV, MOV, AVI, …)", elem_id="video-upload")
            smooth = gr.Dropdown(list(CHOICES), value=runtime.options.smooth, label="Smoothing",
                                 info=SMOOTHING_INFO, elem_id="video-smooth")
            threshold = gr.Slider(0.05, 0.95, value=runtime.engine.threshold, step=0.05,
                                  label="Threshold", info=THRESHOLD_INFO,
                                  elem_id="video-threshold")
            hud = gr.Checkbox(value=runtime.options.hud, label="HUD in the masked video",
                              info="speed and settings drawn into the top-left corner",
                              elem_id="video-hud")
            run = gr.Button("Segment video", variant="primary", elem_id="video-run")
            problem = gr.Markdown(elem_id="video-problem")
        with gr.Column():
            video = gr.Video(label="Masked video", elem_id="video-output", interactive=False,
                             height=PREVIEW_HEIGHT)
            summary = gr.Dataframe(headers=["measure", "value"], label="Summary",
                                   elem_id="video-summary", interactive=False, wrap=True,
                                   column_widths=["35%", "65%"])
            masks = gr.File(label="Mask PNGs (zip)", elem_id="video-masks")
            table = gr.File(label="Per-frame CSV", elem_id="video-csv")
    event = run.click(
        user_errors(run_video, runtime.problems),
        inputs=[upload, smooth, threshold, hud],
        outputs=[video, masks, table, summary],
        api_name="segment_video",
        concurrency_limit=1,  # a file job takes the CPU; the next waits in the queue
    )
    problem_line(event, problem, runtime.problems)


def image_tab(runtime) -> None:
    """A still photo: overlay, mask PNG and lesion area."""
    def run_image(photo, threshold, request: gr.Request):
        return segment_image(photo, threshold, runtime=runtime,
                             owner=runtime.visitors.owner(request))

    gr.Markdown("Upload or paste a dermoscopic photo and press **Segment image**: the overlay, "
                "the mask at the photo's size and the lesion area.", elem_id="image-guide")
    with gr.Row():
        with gr.Column():
            photo = gr.Image(label="Dermoscopic photo", sources=["upload", "clipboard"],
                             type="filepath", elem_id="image-input", height=PREVIEW_HEIGHT)
            threshold = gr.Slider(0.05, 0.95, value=runtime.engine.threshold, step=0.05,
                                  label="Threshold", info=THRESHOLD_INFO,
                                  elem_id="image-threshold")
            run = gr.Button("Segment image", variant="primary", elem_id="image-run")
            problem = gr.Markdown(elem_id="image-problem")
        with gr.Column():
            overlay = gr.Image(label="Overlay", elem_id="image-overlay", interactive=False,
                               format="png", height=PREVIEW_HEIGHT)
            mask = gr.File(label="Mask PNG (0/255)", elem_id="image-mask")
            area = gr.Markdown(elem_id="image-area")
    event = run.click(
        user_errors(run_image, runtime.problems),
        inputs=[photo, threshold],
        outputs=[overlay, mask, area],
        api_name="segment_image",
        preprocess=False,  # the handler decodes and checks the upload itself
    )
    problem_line(event, problem, runtime.problems)


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
