"""The web demo in a real browser: headless Chromium with a fake camera playing a sweep clip.

The server is ``python demo.py --gradio`` in a subprocess; Chromium (Debian's, driven through
/usr/bin/chromedriver) plays a generated y4m clip as its webcam. Each camera frame carries its
index as a bar code, so a returned frame can be compared with the exact frame that was sent, and
the page can measure the round trip. ``SLSNET_SCREENSHOTS=DIR`` also keeps the tab screenshots
(the README's come from ``SLSNET_SCREENSHOTS=docs/img``) and the measured numbers.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from support.browser import (
    CELL,
    MARGIN,
    camera_clip,
    chromium,
    css,
    demo_server,
    have_chromium,
    isic_pair,
    open_tab,
    sweep_frames,
    wait_for,
    write_mp4,
)
from support.live_page import (
    next_frame_after,
    page_lags_ms,
    probe_log,
    readout,
    readout_frame,
    readout_lag,
    round_trip,
    start_probe,
)
from support.media import write_text_as_video

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not have_chromium(), reason="needs chromium and chromedriver (Debian)"),
]
pytest.importorskip("selenium")

TINT_RED_GAIN = 12  # the lesion tint raises red by ~20 (skin) to ~50 (lesion) levels
MEASURED: dict[str, float] = {}  # CPU time and frame count at the start; the lag compared
LAG_RESULTS = 20  # results the readout's camera → shown covers before it is compared
# The readout, the grab time of the frame whose result brought it, and the probe's log
LAG_AT_ONE_MOMENT_JS = """return [document.querySelector('#live-readout').innerText,
                                 document.querySelector('#live-grabbed input').value,
                                 window.__live]"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser")


@pytest.fixture(scope="module")
def clip(work):
    # A steady hand (tremor only): the lesion's area barely changes from frame to frame, so
    # two returned frames differ by the threshold, not by where the sweep had got to.
    return camera_clip(work / "camera.y4m", size_wh=(320, 240), fps=15, seconds=6.0,
                       motion="jitter")


@pytest.fixture(scope="module")
def server(work):
    with demo_server(work, "--device", "cpu", "--threads", "1", timeout=180) as running:
        yield running


@pytest.fixture(scope="module")
def page(server, clip):
    with chromium(clip.path) as driver:
        driver.get(server.url + "/")
        wait_for(driver, css("#live-camera"), timeout=60, what="the page")
        yield driver


@pytest.fixture(scope="module")
def shots(work) -> Path:
    """Where screenshots and numbers go: SLSNET_SCREENSHOTS, else the test's temp folder."""
    target = Path(os.environ.get("SLSNET_SCREENSHOTS", work / "shots"))
    target.mkdir(parents=True, exist_ok=True)
    return target


def set_number(driver, selector: str, value: float) -> None:
    """Type ``value`` into a slider's number box and commit it as a user would (Enter)."""
    from selenium.webdriver.common.keys import Keys

    box = wait_for(driver, css(f"{selector} input[type='number']"), what=selector)
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.ENTER)


def upload(driver, selector: str, path: Path) -> None:
    """Choose ``path`` in the upload component ``selector`` (clearing a previous file)."""
    for button in driver.find_elements("css selector", f"{selector} button[aria-label='Clear']"):
        button.click()
    field = wait_for(driver, lambda d: d.find_element("css selector",
                                                      f"{selector} input[type='file']"),
                     what=f"the file input of {selector}")
    field.send_keys(str(path))
    wait_for(driver, lambda d: path.name in text_of(d, selector),
             timeout=30, what=f"{path.name} in {selector}")


def text_of(driver, selector: str) -> str:
    """An element's text with line breaks removed (Gradio breaks file names before the suffix)."""
    return driver.find_element("css selector", selector).text.replace("\n", "")


LABEL_OVERLAP_JS = """
const [pane, media] = arguments;
const label = document.querySelector(pane + ' [data-testid="block-label"]');
const picture = document.querySelector(pane + ' ' + media);
if (!label || !picture) return -1;
const a = label.getBoundingClientRect(), b = picture.getBoundingClientRect();
const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
return Math.max(0, w) * Math.max(0, h);
"""


def label_overlap(driver, pane: str, media: str) -> float:
    """Square px of the picture in ``pane`` that the pane's label covers (the HUD's corner)."""
    area = driver.execute_script(LABEL_OVERLAP_JS, pane, media)
    assert area >= 0, f"no label or no {media} in {pane}"
    return area


def tint_fraction(out: np.ndarray, sent: np.ndarray) -> float:
    """Share of pixels that the lesion tint reddened, below the HUD and beside the bar code."""
    h, w = out.shape[:2]
    region = (slice(h // 4, h - CELL - 3 * MARGIN), slice(0, w))
    gain = out[region][..., 2].astype(int) - sent[region][..., 2].astype(int)
    return float(np.mean(gain > TINT_RED_GAIN))


@pytest.mark.timeout(240, func_only=True)  # a hang guard above the waits inside
def test_live_tab_overlays_the_lesion_and_updates_the_readout(page, server, clip, shots):
    # given the Live tab, threshold at its lowest and the HUD off
    set_number(page, "#live-threshold", 0.05)
    page.find_element("css selector", "#live-hud input").click()
    # when the browser camera streams
    wait_for(page, css("#live-camera button"), what="the webcam button").click()
    record = wait_for(page, css("#live-camera button[aria-label='capture photo']"), timeout=30,
                      what="the record button")
    start_probe(page)
    record.click()
    # then overlaid frames come back, and the FPS readout counts them
    wait_for(page, lambda d: readout_frame(d) >= 0, timeout=45, what="the first returned frame")
    first = readout_frame(page)
    MEASURED.update(cpu=cpu_seconds(server.proc.pid), frame=first)
    wait_for(page, lambda d: readout_frame(d) >= first + 3, timeout=45, what="three more frames")
    text = readout(page)
    assert float(re.search(r"· ([\d.]+) fps", text).group(1)) > 0
    assert "threshold 0.05" in text and "per stage" in text and "infer" in text
    # and the frame shown is the camera frame it came from with the lesion tinted
    out, sent = next_frame_after(page, server, clip, 0)
    low = tint_fraction(out, sent)
    assert low > 0.01, low
    # (frames replace each other quickly: the <img> may be between two when first asked)
    wait_for(page, lambda d: d.find_element("css selector", "#live-output img")
             .get_property("naturalWidth") == 320, timeout=10, what="a 320-wide output image")
    # and the panes' labels sit above the pictures, not on the HUD's corner
    assert label_overlap(page, "#live-output", "img") == 0
    assert label_overlap(page, "#live-camera", "video") == 0


@pytest.mark.timeout(240, func_only=True)  # a hang guard above the waits inside
def test_live_readout_reports_the_lag_the_page_shows(page, clip):
    # given the Live tab streaming the clip (the test above started it), frame numbers drawn in
    # when the page has timed camera → shown for enough results
    def counted(d):
        return (readout_lag(readout(d)) or (0, 0, 0))[2] >= LAG_RESULTS

    wait_for(page, counted, timeout=120, what=f"camera → shown over {LAG_RESULTS} results")
    text, grabbed, samples = page.execute_script(LAG_AT_ONE_MOMENT_JS)
    p50, p95, results = readout_lag(text)
    # then its p50 is the lag the page shows over the same results (the camera's frame on screen
    # minus the frame in the shown result), to within one frame period of the clip: the results
    # shown before the page grabbed the frame whose result brought this readout
    shown = page_lags_ms([s for s in samples if s["t"] < float(grabbed)][-results:], clip)
    assert len(shown) >= LAG_RESULTS // 2, samples[-results:]
    MEASURED.update(lag_results=results, lag_readout_p50_ms=p50, lag_readout_p95_ms=p95,
                    lag_page_p50_ms=float(np.percentile(shown, 50)),
                    lag_page_p95_ms=float(np.percentile(shown, 95)))
    assert abs(p50 - MEASURED["lag_page_p50_ms"]) <= 1e3 / clip.fps, (text, shown)
    # and the server's own part, named as such, is a part of it
    server_p50 = float(re.search(r"server p50 (\d+) / p95 \d+ ms a frame", text).group(1))
    assert server_p50 <= p50 <= p95, text


@pytest.mark.timeout(240, func_only=True)  # a hang guard above the waits inside
def test_live_threshold_applies_to_the_next_frames(page, server, clip, shots):
    # given a running stream at threshold 0.05
    out, sent = next_frame_after(page, server, clip, 0)
    low = tint_fraction(out, sent)
    # when the threshold goes to 0.95
    set_number(page, "#live-threshold", 0.95)
    wait_for(page, lambda d: "threshold 0.95" in readout(d), timeout=45, what="threshold 0.95")
    now = page.execute_script("return performance.now()")
    # then the frames that follow have less of the lesion tinted
    out, sent = next_frame_after(page, server, clip, now)
    assert tint_fraction(out, sent) < low
    # and the page measured the round trip (numbers for docs/benchmarks.md)
    numbers = round_trip(probe_log(page), clip)
    assert numbers["frames"] >= 3 and numbers["fps"] > 0
    served = readout_frame(page) - MEASURED["frame"]
    numbers["server_cpu_s_per_frame"] = (cpu_seconds(server.proc.pid) - MEASURED["cpu"]) / served
    numbers["load_average"] = os.getloadavg()[0]
    # and the readout leads with the lag the page timed, the server's part after it
    text = readout(page)
    server_ms = re.search(r"server p50 (\d+) / p95 (\d+) ms a frame", text)
    assert server_ms and "the rest is upload, queue, download and display" in text, text
    numbers["readout_server_p50_ms"] = float(server_ms.group(1))
    numbers.update({k: v for k, v in MEASURED.items() if k.startswith("lag_")})
    if "keyframe" in readout(page):  # auto on the CPU: the page says the network skips frames
        assert "the network runs on 1 frame in" in readout(page)
    (shots / "live_round_trip.json").write_text(json.dumps(numbers, indent=1))
    # the README's picture: default threshold, HUD on
    page.find_element("css selector", "#live-hud input").click()
    set_number(page, "#live-threshold", 0.5)
    wait_for(page, lambda d: "threshold 0.50" in readout(d), timeout=45, what="threshold 0.50")
    next_frame_after(page, server, clip, page.execute_script("return performance.now()"))
    page.save_screenshot(str(shots / "web_live.png"))
    page.find_element("css selector", "#live-camera button[aria-label='capture photo']").click()
    # and once stopped, the readout says so instead of keeping the last numbers
    wait_for(page, lambda d: "Stopped" in readout(d), timeout=20, what="the stopped state")


@pytest.mark.timeout(240, func_only=True)  # a hang guard above the waits inside
def test_image_tab_in_the_browser(page, shots):
    # given the Image tab and an ISIC photo
    open_tab(page, "Image")
    image_path, _ = isic_pair(1)
    # when the photo is chosen and segmented
    field = wait_for(page, lambda d: d.find_element("css selector",
                                                    "#image-input input[type='file']"),
                     what="the image upload")
    field.send_keys(str(image_path))
    wait_for(page, css("#image-input img"), timeout=30, what="the uploaded photo")
    page.find_element("css selector", "#image-run").click()
    # then the overlay, the mask file and the area appear
    wait_for(page, css("#image-overlay img"), timeout=45, what="the overlay")
    wait_for(page, lambda d: "Lesion area" in d.find_element("css selector", "#image-area").text,
             timeout=30, what="the lesion area")
    assert f"{image_path.stem}_mask.png" in text_of(page, "#image-mask")
    assert label_overlap(page, "#image-overlay", "img") == 0
    assert label_overlap(page, "#image-input", "img") == 0
    page.save_screenshot(str(shots / "web_image.png"))


@pytest.mark.timeout(240, func_only=True)  # a hang guard above the waits inside
def test_video_tab_in_the_browser(page, work, shots):
    # given the Video tab and an 8-frame recording
    open_tab(page, "Video")
    recording = write_mp4(work / "recording.mp4",
                          sweep_frames(size_wh=(320, 240), fps=15, seconds=0.55, stamp=False),
                          fps=15)
    upload(page, "#video-upload", recording)
    # when it is segmented
    page.find_element("css selector", "#video-run").click()
    # then the masked video, the masks, the CSV and the summary appear
    wait_for(page, css("#video-output video"), timeout=60, what="the masked video")
    summary = wait_for(page, lambda d: d.find_element("css selector", "#video-summary").text,
                       what="the summary")
    assert "8 written of 8 decoded" in summary
    assert "recording_masks.zip" in text_of(page, "#video-masks")
    assert "recording_frames.csv" in text_of(page, "#video-csv")
    assert label_overlap(page, "#video-output", "video") == 0
    page.save_screenshot(str(shots / "web_video.png"))


@pytest.mark.timeout(240, func_only=True)  # a hang guard above the waits inside
def test_a_bad_upload_shows_a_message_in_the_page(page, work):
    # given the Video tab and a text file named like a video
    open_tab(page, "Video")
    notes = write_text_as_video(work / "notes.mp4")
    upload(page, "#video-upload", notes)
    # when it is run
    page.find_element("css selector", "#video-run").click()
    # then the page says what is wrong with it
    toast = wait_for(page, css(".toast-body"), timeout=45, what="an error message")
    assert "notes.mp4 is not a video" in toast.text
    assert str(work) not in toast.text  # no server paths in the page
    # and the reason stays in the page after the pop-up is gone
    wait_for(page, lambda d: "notes.mp4 is not a video" in text_of(d, "#video-problem"),
             timeout=30, what="the reason in the page")
    wait_for(page, lambda d: not d.find_elements("css selector", ".toast-body"), timeout=40,
             what="the pop-up to go")
    assert "notes.mp4 is not a video" in text_of(page, "#video-problem")


@pytest.mark.timeout(240, func_only=True)  # a hang guard above the waits inside
def test_an_empty_click_says_what_to_do_in_the_page(page):
    # given the Image tab of a fresh page, with nothing uploaded
    page.refresh()
    wait_for(page, css("#header"), timeout=60, what="the page")
    open_tab(page, "Image")
    # when Segment is pressed
    page.find_element("css selector", "#image-run").click()
    # then a line in the page says to choose a file first
    wait_for(page, lambda d: "choose a file first" in text_of(d, "#image-problem"), timeout=45,
             what="the reason in the page")


def test_the_page_explains_itself(page):
    text = text_of(page, "#header")
    assert "not a medical device" in text
    open_tab(page, "Live")
    assert "keyframe" in text_of(page, "#live-smooth")  # what auto means, next to the control


@pytest.mark.timeout(240, func_only=True)  # a hang guard above the waits inside
def test_the_page_reads_on_a_phone(server, work, shots):
    # given a 390×844 phone screen
    with chromium(size_wh=(390, 844)) as phone:
        phone.get(server.url + "/")
        wait_for(phone, css("#header"), timeout=60, what="the page")
        assert "not a medical device" in text_of(phone, "#header")
        for tab in ("Live", "Video", "Image"):
            open_tab(phone, tab)
            # then no tab is wider than the screen (nothing to scroll sideways to)
            width = phone.execute_script("return document.documentElement.scrollWidth")
            assert width <= phone.execute_script("return window.innerWidth") + 1, (tab, width)
        # and in the Video tab the masked video comes before the summary, which fits the screen
        open_tab(phone, "Video")
        recording = write_mp4(work / "phone.mp4", sweep_frames(size_wh=(320, 240), fps=15,
                                                               seconds=0.3, stamp=False), fps=15)
        upload(phone, "#video-upload", recording)
        phone.find_element("css selector", "#video-run").click()
        wait_for(phone, css("#video-output video"), timeout=60, what="the masked video")
        wait_for(phone, lambda d: "written of" in d.find_element("css selector",
                                                                 "#video-summary").text,
                 what="the summary")
        tops = phone.execute_script(
            "return ['#video-output', '#video-summary'].map("
            "s => document.querySelector(s).getBoundingClientRect().top)")
        assert tops[0] < tops[1], tops
        table = "#video-summary table"
        overflow = phone.execute_script(
            "const t = document.querySelector(arguments[0]);"
            "return t.scrollWidth - t.parentElement.clientWidth", table)
        assert overflow <= 1, overflow
        assert label_overlap(phone, "#video-output", "video") == 0
        phone.save_screenshot(str(shots / "web_phone_video.png"))
