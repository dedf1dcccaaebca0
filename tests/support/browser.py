"""Harness for the web-demo tests: the real server in a subprocess and headless Chromium.

* :func:`write_y4m` writes the clip Chromium's fake camera plays (``--use-file-for-fake-video-
  capture``): a :func:`stream.bench.synth.sweep` over an ISIC image, each frame stamped with its
  index as a bar code in the bottom-right corner, so that the page can tell which camera frame a
  returned frame came from (:mod:`support.live_page` decodes it in the browser).
* :func:`demo_server` starts ``python demo.py --gradio`` on a free localhost port and stops it.
* :func:`chromium` starts Chromium 15x from Debian (``/usr/bin/chromium`` driven by
  ``/usr/bin/chromedriver`` through Selenium; Selenium's own driver download is never used).

Sizes are (W, H); frames are H×W×3 uint8 BGR.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from support.isic_runs import ISIC

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("SLSNET_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("SLSNET_CHROMEDRIVER", "/usr/bin/chromedriver"))
ISIC_VAL = ISIC / "val"

# Bar code: BITS cells of CELL×CELL px in the bottom-right corner, on a white frame of MARGIN px,
# black = 0, white = 1, most significant bit first. 16 px cells survive JPEG and WebP.
BITS, CELL, MARGIN = 9, 16, 4


def stamp_index(bgr: np.ndarray, index: int) -> np.ndarray:
    """Draw ``index`` as a bar code into the bottom-right corner of ``bgr`` (in place)."""
    h, w = bgr.shape[:2]
    x0, y0 = w - BITS * CELL - MARGIN, h - CELL - MARGIN
    bgr[y0 - MARGIN : h, x0 - MARGIN : w] = 255
    for bit in range(BITS):
        on = (index >> (BITS - 1 - bit)) & 1
        x = x0 + bit * CELL
        bgr[y0 : y0 + CELL, x : x + CELL] = 255 if on else 0
    return bgr


def read_stamp(bgr: np.ndarray) -> int:
    """The index :func:`stamp_index` drew into a (possibly recompressed) frame."""
    h, w = bgr.shape[:2]
    x0, y0 = w - BITS * CELL - MARGIN, h - CELL - MARGIN
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    value = 0
    for bit in range(BITS):
        x = x0 + bit * CELL + CELL // 2
        value = (value << 1) | int(gray[y0 + CELL // 2, x] > 128)
    return value


def write_y4m(path: Path, frames: Iterable[np.ndarray], fps: int) -> int:
    """Write BGR frames as a YUV4MPEG2 4:2:0 file (Chromium's fake-camera format); returns N."""
    count = 0
    with open(path, "wb") as out:
        for bgr in frames:
            h, w = bgr.shape[:2]
            if count == 0:
                out.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).tobytes())
            count += 1
    return count


def isic_pair(index: int = 0) -> tuple[Path, Path]:
    """An ISIC 2017 validation image and its mask (skips the test where the data is absent)."""
    images = sorted((ISIC_VAL / "images").glob("*.jpg"))
    if not images:
        pytest.skip(f"ISIC 2017 data not found at {ISIC}")
    image = images[index]
    return image, ISIC_VAL / "masks" / f"{image.stem}_segmentation.png"


@dataclass
class CameraClip:
    """The fake camera's clip: the y4m file and its frames (stamped, BGR) for comparisons."""

    path: Path
    frames: list[np.ndarray]
    fps: int


def sweep_frames(*, size_wh=(320, 240), fps: int = 15, seconds: float = 6.0,
                 stamp: bool = True, motion: str = "sweep") -> list[np.ndarray]:
    """A :func:`stream.bench.synth.sweep` over an ISIC lesion, each frame stamped with its index."""
    from stream.bench.synth import sweep

    image, mask = isic_pair(0)
    rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
    truth = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
    frames = [f for f, _ in sweep(rgb, truth, motion=motion, size_wh=size_wh, fps=fps,
                                  seconds=seconds)]
    return [stamp_index(f, i) for i, f in enumerate(frames)] if stamp else frames


def camera_clip(path: Path, **kwargs) -> CameraClip:
    """Write :func:`sweep_frames` as the y4m clip Chromium's fake camera plays."""
    frames = sweep_frames(**kwargs)
    fps = kwargs.get("fps", 15)
    write_y4m(path, frames, fps)
    return CameraClip(path, frames, fps)


def write_mp4(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """Encode BGR frames as an H.264 MP4 (a recording to upload)."""
    from stream.bench.synth import write_clip

    write_clip(((f, None) for f in frames), path, None, fps=fps)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running demo server."""

    url: str
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        """Everything the server printed so far."""
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def demo_server(
    tmp: Path, *args: str, timeout: float = 60.0, env: dict | None = None
) -> Iterator[Server]:
    """Run ``python demo.py --gradio --port FREE ARGS`` until the page answers; stop it after.

    Gradio's upload cache and the demo's own work files go under ``tmp`` (``GRADIO_TEMP_DIR``
    and ``TMPDIR``), so a test can check what the server leaves behind.
    """
    port = free_port()
    log = tmp / f"server-{port}.log"
    environ = {
        **os.environ,
        "GRADIO_TEMP_DIR": str(tmp / "gradio"),
        "TMPDIR": str(tmp / "work"),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    (tmp / "gradio").mkdir(exist_ok=True)
    (tmp / "work").mkdir(exist_ok=True)
    cmd = [
        sys.executable,
        str(REPO / "demo.py"),
        "--gradio",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
    ]
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, cwd=REPO, env=environ, stdout=sink, stderr=subprocess.STDOUT)
    tls = "--ssl-certfile" in args
    server = Server(f"{'https' if tls else 'http'}://127.0.0.1:{port}", proc, log)
    context = ssl._create_unverified_context() if tls else None  # a test's self-signed cert
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{server.output()}")
            try:
                with urllib.request.urlopen(server.url + "/", timeout=2,
                                            context=context) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not up in {timeout:.0f} s:\n{server.output()}")
            time.sleep(0.2)
        yield server
    finally:
        stop_server(proc)


def stop_server(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    """Ctrl-C the server, as a user would; kill it if it does not exit in ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def have_chromium() -> bool:
    """Whether Debian's chromium and chromedriver are installed."""
    return CHROMIUM.is_file() and CHROMEDRIVER.is_file()


@contextlib.contextmanager
def chromium(fake_video: Path | None = None, *, size_wh=(1280, 1000)):
    """Headless Chromium (Selenium WebDriver) with ``fake_video`` as its only camera."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="slsnet-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    flags = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={size_wh[0]},{size_wh[1]}",
        "--use-fake-ui-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
    ]
    if fake_video is not None:
        flags += [
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={fake_video}",
        ]
    for flag in flags:
        options.add_argument(flag)
    # Never let Selenium Manager look for (or download) a driver or a browser.
    os.environ["SE_OFFLINE"] = "true"
    service = Service(executable_path=str(CHROMEDRIVER), log_output=os.devnull)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, predicate, timeout: float = 20.0, what: str = "condition"):
    """Poll ``predicate(driver)`` until it returns something truthy; fail after ``timeout``."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(
            driver, timeout, poll_frequency=0.1, ignored_exceptions=(WebDriverException,)
        ).until(predicate)
    except Exception as exc:  # TimeoutException: say what we were waiting for
        raise TimeoutError(f"waited {timeout:.0f} s for {what}") from exc


def css(selector: str):
    """A predicate: the first visible element matching ``selector``."""
    from selenium.webdriver.common.by import By

    def find(driver):
        for element in driver.find_elements(By.CSS_SELECTOR, selector):
            if element.is_displayed():
                return element
        return None

    return find


def open_tab(driver, label: str) -> None:
    """Click the tab button whose text is ``label``."""
    from selenium.webdriver.common.by import By

    def button(d):
        for b in d.find_elements(By.CSS_SELECTOR, "button[role='tab']"):
            if b.text.strip() == label:
                return b
        return None

    wait_for(driver, button, what=f"tab {label!r}").click()


def element_png(driver, selector: str, path: Path) -> Path:
    """Screenshot of one element, for the README."""
    wait_for(driver, css(selector), what=selector).screenshot(str(path))
    return path
