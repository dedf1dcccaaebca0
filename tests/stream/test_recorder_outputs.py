"""File mode's outputs on awkward inputs and places: mask videos, mask folders, the output file.

A resolution change under --mask-video, a --mask-dir where no directory can be made, odd frame
sides padded for H.264, and an output device that takes nothing.
"""

from __future__ import annotations

import os
import threading
from fractions import Fraction

import av
import numpy as np
import pytest
from support.media import decode_video, synthetic_frame
from support.nets import save_no_lesion
from support.recorders import process, write_input
from support.reliability import run_cli

from stream.outputs import MaskVideoSink
from stream.queues import EOS
from stream.sources import open_source


@pytest.fixture(scope="module")
def no_lesion(tmp_path_factory):
    """Weights of a generator whose every probability is ~0: nothing drawn over the frames."""
    return save_no_lesion(tmp_path_factory.mktemp("w") / "no_lesion.pt")


# ---- 8. a resolution change under --mask-video -----------------------------------------------


def write_resized(path, sizes_wh=((96, 64), (160, 120)), *, per_size=4):
    """An MJPEG MKV whose frames change size mid-stream (a scope switched to another mode)."""
    time_base, i = Fraction(1, 1000), 0
    with av.open(str(path), "w") as out:
        v = out.add_stream("mjpeg", rate=25)
        v.width, v.height = sizes_wh[0]
        v.pix_fmt, v.time_base = "yuvj420p", time_base
        out.start_encoding()
        for size_wh in sizes_wh:
            encoder = av.CodecContext.create("mjpeg", "w")
            encoder.width, encoder.height = size_wh
            encoder.pix_fmt, encoder.time_base = "yuvj420p", time_base
            for _ in range(per_size):
                frame = av.VideoFrame.from_ndarray(synthetic_frame(i, size_wh), format="bgr24")
                for packet in encoder.encode(frame.reformat(format="yuvj420p")):
                    packet.stream, packet.time_base = v, time_base
                    packet.pts = packet.dts = i * 40
                    out.mux(packet)
                i += 1
    return path


@pytest.mark.timeout(60)
def test_masks_after_a_resolution_change_stay_0_and_255_in_the_mask_video(tmp_path):
    # given a clip that switches from 96×64 to 160×120 after 4 frames, with masks at each
    # frame's own size (what the segmenter gives)
    clip = write_resized(tmp_path / "switch.mkv")
    source = open_source(str(clip))
    sink = MaskVideoSink(tmp_path / "masks.mkv")
    sink.open(source.info)
    stop = threading.Event()
    source.start(stop)
    masks = []
    while (frame := source.queue.get(stop, timeout=20)) is not EOS:
        frame.mask = (frame.image[..., 1] > 128).astype(np.uint8)
        masks.append(frame.mask)
        sink.write(frame)
    sink.close()
    assert source.join(5)
    assert [m.shape for m in masks] == [(64, 96)] * 4 + [(120, 160)] * 4
    # when the mask video is read back
    decoded = [image for _, image in decode_video(sink.path, fmt="gray")]
    # then every mask is 0/255 at the size the file was opened with, the resized ones taken
    # pixel by pixel from the frame's own mask, and a note says so
    assert len(decoded) == 8
    for mask, image in zip(masks, decoded, strict=True):
        assert image.shape == (64, 96)
        assert set(np.unique(image)) <= {0, 255}
        rows = np.arange(64) * mask.shape[0] // 64
        cols = np.arange(96) * mask.shape[1] // 96
        assert np.array_equal(image, 255 * mask[rows][:, cols])
    assert any("nearest neighbour, still 0/255" in note for note in sink.warnings)


# ---- 9. the smaller ones ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_mask_dir_where_no_directory_can_be_made_is_one_line(tmp_path, no_lesion):
    # given /proc, which looks writable to root and takes no new directory
    target = "/proc/slsnet-masks"
    try:
        os.mkdir(target)
    except OSError:
        pass
    else:
        os.rmdir(target)
        pytest.skip("this system lets /proc take a directory")
    clip = write_input(tmp_path / "in.mkv", codec="mjpeg", frames=2)
    # when it is given as --mask-dir
    run = run_cli("--video", clip, "--mask-dir", target, "--weights", no_lesion)
    # then one error line, no traceback
    assert run.rc != 0 and not run.has_traceback
    assert len(run.error_lines) == 1
    assert run.error_lines[0].startswith(f"error: cannot create mask directory {target}")
    assert "Errno" not in run.stderr


@pytest.mark.timeout(120)
def test_the_padding_warning_is_printed_once(tmp_path, no_lesion):
    # given a clip of odd sides (FFV1 keeps them)
    clip = tmp_path / "odd.mkv"
    with av.open(str(clip), "w") as out:
        v = out.add_stream("ffv1", rate=25)
        v.width, v.height, v.pix_fmt = 95, 63, "yuv420p"
        for i in range(3):
            image = av.VideoFrame.from_ndarray(synthetic_frame(i, (95, 63)), format="bgr24")
            out.mux(v.encode(image.reformat(format="yuv420p")))
        out.mux(v.encode())
    # when processed
    run, out = process(clip, tmp_path, no_lesion)
    # then the padding is said once
    assert run.rc == 0, run.stderr
    assert len([line for line in run.warnings if "padded to 96×64" in line]) == 1


@pytest.mark.timeout(120)
def test_an_output_device_that_takes_nothing_is_an_error_not_frames_written(tmp_path, no_lesion):
    # given /dev/full, where every write fails with ENOSPC (a small output fails only when the
    # last fragment is flushed at close)
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    clip = write_input(tmp_path / "in.mkv", codec="mjpeg", frames=4)
    # when it is the output
    run = run_cli("--video", clip, "--output", "/dev/full", "--no-hud", "--weights", no_lesion)
    # then one line says the disk is full and nothing plays; no line says frames were written
    assert run.rc != 0 and not run.has_traceback
    assert run.error_lines == [
        "error: sink video failed: cannot write /dev/full: disk full (No space left on device); "
        "the file is incomplete: 0 of 4 frames can be played"]
    assert not [line for line in run.warnings if "were written" in line]
