"""The web demo's Video and Image endpoints, called with gradio_client on the real server.

The server is ``python demo.py --gradio`` in a subprocess on a free localhost port (one for the
module); the files are real clips written by PyAV and real ISIC photos.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.browser import REPO, demo_server, isic_pair, stop_server
from support.media import cut_before_moov, probe, write_clip, write_text_as_video

gradio_client = pytest.importorskip("gradio_client")

FRAMES = 12
SERVER_ARGS = ("--device", "cpu", "--threads", "1", "--max-upload-mb", "2")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("web")


@pytest.fixture(scope="module")
def server(work):
    with demo_server(work, *SERVER_ARGS, timeout=180) as running:
        yield running


@pytest.fixture(scope="module")
def client(server, work):
    return gradio_client.Client(server.url, verbose=False, download_files=str(work / "dl"))


@pytest.fixture(scope="module")
def clip(work):
    return write_clip(work / "clip.mp4", frames=FRAMES, size_wh=(160, 120), fps=25)


@pytest.fixture(scope="module")
def file_mode(work, clip):
    """The same clip through ``demo.py --video`` (the CLI's file mode), for comparison."""
    out = work / "file_mode"
    out.mkdir()
    cmd = [sys.executable, str(REPO / "demo.py"), "--video", str(clip.path), "--no-display",
           "--device", "cpu", "--threads", "1", "--output", str(out / "masked.mp4"),
           "--mask-dir", str(out / "masks"), "--csv", str(out / "frames.csv")]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=180)
    return out


def call(client, *args, api_name: str, timeout: float = 90.0):
    """``client.predict`` with a deadline (gradio_client waits forever)."""
    return client.submit(*args, api_name=api_name).result(timeout=timeout)


def app_error(client, *args, api_name: str) -> str:
    """The message the page would show for a call that the server refuses."""
    with pytest.raises(Exception) as info:  # gradio_client's AppError, or a ValueError upload
        call(client, *args, api_name=api_name)
    return str(info.value)


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.timeout(120, func_only=True)
def test_video_tab_gives_what_the_file_mode_gives(client, clip, file_mode, work):
    # given a 12-frame 160×120 clip, and the same clip through demo.py's file mode
    # when it is uploaded to the Video tab
    video, masks_zip, table, summary = call(client,
        gradio_client.handle_file(str(clip.path)), "auto", api_name="/segment_video")
    # then the masked video has the same frames at the same times as the file mode's
    video_path = video["video"] if isinstance(video, dict) else video
    ours, theirs = probe(video_path), probe(file_mode / "masked.mp4")
    assert len(ours.video_pts) == FRAMES
    assert ours.pts_seconds == theirs.pts_seconds
    assert ours.size_wh == (160, 120)
    # and the zip holds one 160×120 0/255 mask per frame, equal to the file mode's masks
    with zipfile.ZipFile(masks_zip) as zf:
        names = sorted(zf.namelist())
        assert names == [f"frame_{i:06d}.png" for i in range(FRAMES)]
        for name in names:
            mask = cv2.imdecode(np.frombuffer(zf.read(name), np.uint8), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (120, 160)
            assert set(np.unique(mask)) <= {0, 255}
            reference = cv2.imread(str(file_mode / "masks" / name), cv2.IMREAD_UNCHANGED)
            assert np.mean(mask == reference) > 0.999
    # and the CSV has one row per frame, in order, as the file mode's
    rows = read_csv(table)
    assert [int(r["index"]) for r in rows] == list(range(FRAMES))
    assert [r["pts_s"] for r in rows] == [r["pts_s"] for r in read_csv(file_mode / "frames.csv")]
    # and the summary says how many frames went through
    values = dict((row[0], row[1]) for row in summary["data"])
    assert values["frames"] == f"{FRAMES} written of {FRAMES} decoded"
    assert "lesion area, mean" in values
    # in a file's terms: how fast it was processed, no live latency or capture rate
    assert summary["headers"] == ["measure", "value"]
    assert "processing speed" in values and "network time per frame" in values
    assert not [k for k in values if "latency" in k or "capture" in k]


@pytest.mark.timeout(180, func_only=True)
def test_video_tab_threshold_and_hud_switch_apply(client, clip, file_mode):
    # when the clip is segmented at a high threshold without the HUD
    video, masks_zip, _, summary = call(client, gradio_client.handle_file(str(clip.path)),
                                        "off", 0.95, False, api_name="/segment_video")
    values = dict((row[0], row[1]) for row in summary["data"])
    # then the summary and the masks follow the threshold: no larger than at the default
    assert values["threshold"] == "0.95"
    with zipfile.ZipFile(masks_zip) as zf:
        high = sum(int(np.count_nonzero(cv2.imdecode(np.frombuffer(zf.read(n), np.uint8), 0)))
                   for n in zf.namelist())
    default = sum(int(np.count_nonzero(cv2.imread(str(m), 0)))
                  for m in sorted((file_mode / "masks").glob("*.png")))
    assert high <= default
    # and no HUD is drawn: the first frame's top-left corner is the clip's, as without a HUD
    video_path = video["video"] if isinstance(video, dict) else video
    from support.media import decode_video

    ((_, first),) = decode_video(video_path)[:1]
    ((_, hud_first),) = decode_video(file_mode / "masked.mp4")[:1]
    corner = (slice(0, 40), slice(0, 120))
    assert np.abs(first[corner].astype(int) - hud_first[corner].astype(int)).mean() > 1.0


@pytest.mark.timeout(120, func_only=True)
def test_a_photo_named_mp4_is_sent_to_the_image_tab_without_a_traceback(client, server, work):
    # given a PNG photo renamed .mp4
    image_path, _ = isic_pair(0)
    fake = work / "photo.mp4"
    fake.write_bytes(cv2.imencode(".png", cv2.imread(str(image_path)))[1].tobytes())
    # when it is uploaded to the Video tab
    message = app_error(client, gradio_client.handle_file(str(fake)), "off",
                        api_name="/segment_video")
    # then it is refused with a pointer to the Image tab, and the console shows no traceback
    assert "photo.mp4 is a still PNG image, not a video" in message and "Image tab" in message
    assert "Traceback" not in server.output()


@pytest.mark.timeout(60, func_only=True)
def test_image_tab_gives_overlay_mask_and_area(client):
    # given an ISIC photo
    image_path, _ = isic_pair(1)
    image = cv2.imread(str(image_path))
    # when it is segmented at threshold 0.5
    overlay, mask_png, area = call(client, gradio_client.handle_file(str(image_path)), 0.5,
                                             api_name="/segment_image")
    # then overlay and mask have the photo's size and the area matches the mask
    assert cv2.imread(overlay).shape == image.shape
    mask = cv2.imread(mask_png, cv2.IMREAD_UNCHANGED)
    assert mask.shape == image.shape[:2]
    assert set(np.unique(mask)) <= {0, 255}
    assert Path(mask_png).name == f"{image_path.stem}_mask.png"
    assert f"{100 * np.mean(mask > 0):.1f} %" in area
    assert "threshold 0.50" in area


@pytest.mark.timeout(60, func_only=True)
def test_image_threshold_changes_the_mask(client):
    # given one photo at the lowest and the highest threshold
    image_path, _ = isic_pair(2)
    low = call(client, gradio_client.handle_file(str(image_path)), 0.05,
                         api_name="/segment_image")
    high = call(client, gradio_client.handle_file(str(image_path)), 0.95,
                          api_name="/segment_image")
    # then a higher threshold never makes the lesion larger, and here makes it smaller
    area_low = np.count_nonzero(cv2.imread(low[1], cv2.IMREAD_UNCHANGED))
    area_high = np.count_nonzero(cv2.imread(high[1], cv2.IMREAD_UNCHANGED))
    assert area_high < area_low


@pytest.mark.timeout(120, func_only=True)
def test_bad_uploads_are_refused_with_a_message_and_the_server_keeps_serving(
        client, clip, work):
    bad = work / "bad"
    bad.mkdir()
    text = write_text_as_video(bad / "notes.mp4")
    empty = bad / "empty.mp4"
    empty.write_bytes(b"")
    cut = cut_before_moov(write_clip(bad / "whole.mp4", frames=8, size_wh=(160, 120)).path,
                          bad / "cut.mp4")
    huge = bad / "huge.mp4"
    with open(huge, "wb") as f:  # 3 MB of zeros, over the server's 2 MB limit
        f.truncate(3 * 2**20)
    video = "/segment_video"
    assert "notes.mp4" in app_error(client, gradio_client.handle_file(str(text)), "off",
                                    api_name=video)
    assert "empty (0 bytes)" in app_error(client, gradio_client.handle_file(str(empty)), "off",
                                          api_name=video)
    assert "cut.mp4" in app_error(client, gradio_client.handle_file(str(cut)), "off",
                                  api_name=video)
    assert "size" in app_error(client, gradio_client.handle_file(str(huge)), "off",
                               api_name=video).lower()
    photo = "/segment_image"
    message = app_error(client, gradio_client.handle_file(str(text)), 0.5, api_name=photo)
    assert "not an image" in message
    # the server is still up and does real work
    image_path, _ = isic_pair(0)
    overlay, _, _ = call(client, gradio_client.handle_file(str(image_path)), 0.5,
                                   api_name="/segment_image")
    assert cv2.imread(overlay) is not None


@pytest.mark.timeout(180, func_only=True)
def test_server_removes_its_files_when_stopped(tmp_path):
    # given a server that has run a video job
    clip = write_clip(tmp_path / "short.mp4", frames=3, size_wh=(160, 120))
    with demo_server(tmp_path, *SERVER_ARGS, timeout=180) as server:
        client = gradio_client.Client(server.url, verbose=False,
                                      download_files=str(tmp_path / "dl"))
        try:
            call(client, gradio_client.handle_file(str(clip.path)), "off",
                 api_name="/segment_video")
        except Exception:
            print(server.output())
            raise
        jobs = list((tmp_path / "gradio").glob("slsnet-web-cache-*/jobs/*/video-*"))
        assert len(jobs) == 1  # in the visitor's folder inside the server's cache
        client.close()
        # when it is stopped with Ctrl-C
        assert stop_server(server.proc) == 0, server.output()
    # then neither its job folders nor the uploads and results in Gradio's cache are left
    assert list((tmp_path / "work").glob("slsnet-web-*")) == []
    assert list((tmp_path / "gradio").glob("slsnet-web-cache-*")) == []
    assert [p for p in (tmp_path / "gradio").rglob("*") if p.is_file()] == []


@pytest.mark.timeout(120)
def test_single_run_flags_with_gradio_are_one_error_line(tmp_path):
    # given --gradio together with a flag of the single-file mode
    cmd = [sys.executable, str(REPO / "demo.py"), "--gradio", "--video", "clip.mp4",
           "--csv", "out.csv"]
    # when it starts
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=110)
    # then it says so in one line and exits non-zero, without a traceback or a server
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --video, --csv do not apply to --gradio: upload a recording in the page's "
        "Video tab instead")
    assert "Traceback" not in done.stderr and "Running on" not in done.stdout


@pytest.fixture(scope="module")
def engine():
    import torch

    from stream.engines import build_engine

    return build_engine(device=torch.device("cpu"), weights=None, threads=1)


@pytest.mark.timeout(60)
def test_each_session_keeps_its_own_smoother_while_sharing_the_engine(engine, clip):
    from support.media import decode_video

    from stream.web import Runtime, WebOptions
    from stream.web.live import browser_frame

    # given one runtime (one engine) and two browser sessions streaming the same frames
    runtime = Runtime(engine, WebOptions())
    frames = [cv2.cvtColor(img, cv2.COLOR_BGR2RGB) for _, img in decode_video(clip.path)][:4]
    try:
        _, _, first, _ = browser_frame(frames[0], None, "ema", 0.5, True, runtime=runtime)
        _, text, second, _ = browser_frame(frames[0], None, "ema", 0.3, False, runtime=runtime)
        # when only the first session goes on
        for rgb in frames[1:]:
            out, _, first, _ = browser_frame(rgb, first, "ema", 0.5, True, runtime=runtime)
        # then each has its own smoother, counters and threshold; the engine's is unchanged
        assert first.smoother is not second.smoother
        assert first.stats.frames_in == 4 and second.stats.frames_in == 1
        assert "threshold 0.30" in text and first.threshold == 0.5
        assert runtime.engine.threshold == engine.threshold
        assert out.shape == frames[0].shape
        # the HUD on the returned frames names its figure as the server's part of the trip
        assert first.segmenter.renderer.latency == "server"
        # and a new threshold rebuilds only that session's smoother, keeping its counters
        _, _, changed, _ = browser_frame(frames[0], first, "ema", 0.7, True, runtime=runtime)
        assert changed.smoother is not first.smoother and changed.stats.frames_in == 5
    finally:
        runtime.close()


@pytest.mark.timeout(60)
def test_live_readout_leads_with_the_pages_lag_then_the_servers_part(engine, clip):
    from support.media import decode_video

    from stream.web import Runtime, WebOptions
    from stream.web.live import SHOWN_WINDOW, STOPPED_AFTER_S, browser_frame, stopped_readout

    # given a tab streaming with keyframe smoothing, whose page has timed nothing yet
    runtime = Runtime(engine, WebOptions())
    frames = [cv2.cvtColor(img, cv2.COLOR_BGR2RGB) for _, img in decode_video(clip.path)][:5]
    try:
        _, text, session, back = browser_frame(frames[0], None, "keyframe", 0.5, False, 1000.0,
                                               None, runtime=runtime)
        # then the frame's grab time comes back, and the readout says the lag is not measured
        assert back == 1000.0
        assert "camera → shown: not measured yet" in text
        # when the page reports its camera → shown lags, each with the next frame (the latest
        # one again until it has a newer one), and junk from a client without the page's script
        reports = ["1000.0 120.5", "1050.0 180.0", "1050.0 180.0", "oops", "1100.0 -3", None,
                   "1100.0 150.0"]
        for rgb, report in zip(frames[1:] * 2, reports, strict=False):
            _, text, session, _ = browser_frame(rgb, session, "keyframe", 0.5, False, None,
                                                report, runtime=runtime)
        # then the readout leads with their percentiles, each grab counted once
        assert list(session.shown) == [120.5, 180.0, 150.0]
        assert "camera → shown p50 150 / p95 177 ms** over the last 3 results" in text
        assert "timed in this page" in text
        # and names the server's number as its part only, and that the network sees keyframes
        assert "server p50" in text and "arrival to result" in text
        assert "the rest is upload, queue, download and display" in text
        interval = session.notes["keyframe_interval"]
        assert f"the network runs on 1 frame in {interval} (keyframes)" in text
        # and a new threshold keeps the page's lags, which cover the last SHOWN_WINDOW results
        for k in range(SHOWN_WINDOW + 5):
            _, text, session, _ = browser_frame(frames[0], session, "keyframe", 0.4, False,
                                                None, f"{2000 + k} 99", runtime=runtime)
        assert len(session.shown) == SHOWN_WINDOW and 120.5 not in session.shown
        assert f"p50 99 / p95 99 ms** over the last {SHOWN_WINDOW} results" in text
        # and while frames come there is no stopped state; once they stop, the readout says so
        assert stopped_readout(session) is None
        later = session.last_arrival + STOPPED_AFTER_S + 0.1
        count = session.index
        assert stopped_readout(session, now=later).startswith(f"**Stopped** after {count}")
        assert stopped_readout(None) is None
        # and without keyframes there is no keyframe note
        _, text, _, _ = browser_frame(frames[0], None, "ema", 0.5, False, runtime=runtime)
        assert "keyframes" not in text
    finally:
        runtime.close()


@pytest.mark.timeout(120, func_only=True)
def test_server_camera_tab_streams_the_capture_pipeline(engine, tmp_path):
    from support.browser import free_port

    from stream.web import WebOptions, serve

    # given a server whose "camera" is a clip played at its own rate (no camera on this machine)
    camera = write_clip(tmp_path / "camera.mp4", frames=250, size_wh=(160, 120), fps=25)
    app, runtime = serve(engine, WebOptions(port=free_port(), camera=str(camera.path)),
                         block=False)
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{app.server_port}", verbose=False,
                                      download_files=str(tmp_path / "dl"))
        # when a viewer starts the Server camera tab
        job = client.submit(api_name="/server_camera")
        seen = []
        for image, text in job:
            seen.append((image, text))
            if len(seen) == 3:
                break
        job.cancel()
        client.close()
        # then rendered camera frames and the pipeline's numbers arrive
        assert all(cv2.imread(image).shape == (120, 160, 3) for image, _ in seen)
        assert all("server camera" in text and "processed" in text for _, text in seen)
    finally:
        runtime.close()
        app.close()
    # and the pipeline (and so the camera) is stopped once the server closes
    assert runtime.camera._thread is not None and not runtime.camera._thread.is_alive()
