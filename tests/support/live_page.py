"""The Live tab as the browser tests watch it: a probe in the page and what it measures.

:data:`LIVE_PROBE_JS` logs, every time a returned frame loads in ``#live-output``, the bar code
of that frame and of the frame the camera pane shows at that moment (``window.__live``); the
difference over the clip's rate is the lag a viewer sees, up to one frame period either way.
Camera frames are stamped by :func:`support.browser.stamp_index`.
"""

from __future__ import annotations

import re
import urllib.request

import cv2
import numpy as np

from support.browser import BITS, CELL, MARGIN, read_stamp, wait_for

# Installed into the page: every time the live output image loads, decode the bar code of the
# returned frame and of the frame the camera shows right now, and log (time, out, now).
LIVE_PROBE_JS = """
const [outSel, camSel, bits, cell, margin] = arguments;
if (window.__live) return true;
window.__live = [];
const canvas = document.createElement('canvas');
const ctx = canvas.getContext('2d', {willReadFrequently: true});
function decode(el, w, h) {
  if (!w || !h) return -1;
  canvas.width = w; canvas.height = h;
  ctx.drawImage(el, 0, 0, w, h);
  const x0 = w - bits * cell - margin, y0 = h - cell - margin;
  let v = 0;
  for (let b = 0; b < bits; b++) {
    const p = ctx.getImageData(x0 + b * cell + cell / 2, y0 + cell / 2, 1, 1).data;
    v = (v << 1) | ((0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]) > 128 ? 1 : 0);
  }
  return v;
}
function sample(img) {
  const cam = document.querySelector(camSel);
  window.__live.push({
    t: performance.now(), src: img.currentSrc,
    out: decode(img, img.naturalWidth, img.naturalHeight),
    cam: cam ? decode(cam, cam.videoWidth, cam.videoHeight) : -1,
    w: img.naturalWidth, h: img.naturalHeight,
  });
}
const seen = new WeakSet();
function watch() {
  for (const img of document.querySelectorAll(outSel)) {
    if (seen.has(img)) continue;
    seen.add(img);
    img.addEventListener('load', () => sample(img));
    if (img.complete && img.naturalWidth) sample(img);
  }
}
new MutationObserver(watch).observe(document.body, {subtree: true, childList: true});
watch();
return true;
"""
READOUT_LAG = re.compile(r"camera → shown p50 (\d+) / p95 (\d+) ms\** over the last (\d+) results")


def start_probe(driver) -> None:
    """Install :data:`LIVE_PROBE_JS` (once per page)."""
    driver.execute_script(LIVE_PROBE_JS, "#live-output img", "#live-camera video", BITS, CELL,
                          MARGIN)


def probe_log(driver) -> list[dict]:
    """The probe's log so far: ``t`` (performance.now ms), ``out`` and ``cam`` frame indices."""
    return driver.execute_script("return window.__live")


def readout(driver) -> str:
    """The Live tab's readout."""
    return driver.find_element("css selector", "#live-readout").text


def readout_frame(driver) -> int:
    """The frame count in the readout (-1 before the first result)."""
    found = re.search(r"frame (\d+)", readout(driver))
    return int(found.group(1)) if found else -1


def readout_lag(text: str) -> tuple[float, float, int] | None:
    """The readout's camera → shown (p50 ms, p95 ms, results counted), None before it has one."""
    found = READOUT_LAG.search(text)
    return (float(found.group(1)), float(found.group(2)), int(found.group(3))) if found else None


def page_lags_ms(samples: list[dict], clip) -> list[float]:
    """Camera frame on screen minus the frame in the result, in ms, per sample of the probe.

    The clip loops, so the difference is taken modulo its length.
    """
    return [((s["cam"] - s["out"]) % len(clip.frames)) * 1e3 / clip.fps for s in samples
            if 0 <= s["out"] < len(clip.frames) and 0 <= s["cam"] < len(clip.frames)]


def round_trip(samples: list[dict], clip) -> dict:
    """FPS and the lag the page shows (p50, p95) from the probe's log."""
    frames = [s for s in samples if 0 <= s["out"] < len(clip.frames) and s["cam"] >= 0]
    span_s = (frames[-1]["t"] - frames[0]["t"]) / 1e3
    lags = page_lags_ms(frames, clip)
    return {"frames": len(frames), "fps": (len(frames) - 1) / span_s,
            "latency_p50_ms": float(np.percentile(lags, 50)),
            "latency_p95_ms": float(np.percentile(lags, 95))}


def output_frame(driver, server) -> np.ndarray:
    """The frame the Live tab shows now, fetched from the server as the browser did."""
    src = driver.execute_script("return document.querySelector('#live-output img')?.src")
    assert src and src.startswith(server.url)
    with urllib.request.urlopen(src, timeout=10) as response:
        data = np.frombuffer(response.read(), np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def next_frame_after(driver, server, clip, start: float, timeout: float = 40.0):
    """The first returned frame that the page received after ``start`` (performance.now ms)."""
    def newer(d):
        return d.execute_script("return window.__live.filter(s => s.t > arguments[0]"
                                " && s.out >= 0).length", start) > 0

    wait_for(driver, newer, timeout=timeout, what="a returned frame")
    out = output_frame(driver, server)
    index = read_stamp(out)
    assert 0 <= index < len(clip.frames), index
    return out, clip.frames[index]
