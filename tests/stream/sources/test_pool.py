"""The frame pool: a buffer is handed out again only when nothing refers to it any more."""

import gc
import threading

import numpy as np
import pytest
import torch

from stream.sources import FramePool

SHAPE = (6, 8, 3)


def picture(value: int, shape=SHAPE) -> np.ndarray:
    return np.full(shape, value, np.uint8)


def test_land_copies_the_picture_into_pool_memory():
    pool = FramePool()
    source = picture(7)
    landed = pool.land(source)
    assert np.array_equal(landed, source) and landed.ctypes.data != source.ctypes.data
    source[:] = 9  # the decoder reuses its memory: the landed frame keeps its pixels
    assert (landed == 7).all()


def test_a_buffer_comes_back_only_when_every_holder_has_let_go():
    pool = FramePool()
    first = pool.land(picture(1))
    address = first.ctypes.data
    crop = first[1:3, ::-1]  # a renderer's or sink's view of the frame also holds it
    second = pool.land(picture(2))
    assert second.ctypes.data != address and (first == 1).all()
    del first
    third = pool.land(picture(3))
    assert third.ctypes.data != address and (crop == 1).all()  # the crop still holds it
    del crop
    fourth = pool.land(picture(4))
    assert fourth.ctypes.data == address and (fourth == 4).all()
    assert pool.allocated == 3 and pool.reused == 1 and pool.held() == 3


def test_a_full_pool_neither_waits_nor_grows():
    pool = FramePool(limit=2)
    held = [pool.land(picture(i)) for i in range(2)]
    source = picture(5)
    assert pool.land(source) is source  # left where it was decoded
    assert pool.missed == 1 and len(pool) == 2
    held.pop()
    assert pool.land(picture(6)).ctypes.data != source.ctypes.data
    assert pool.missed == 1


def test_a_new_frame_size_replaces_a_free_buffer_of_the_old_one():
    pool = FramePool(limit=2)
    kept = pool.land(picture(1))
    pool.land(picture(2))  # dropped at once: free
    bigger = pool.land(picture(3, (10, 12, 3)))
    assert bigger.shape == (10, 12, 3) and len(pool) == 2 and (kept == 1).all()


def test_the_allocator_makes_the_memory():
    made = []

    def allocate(shape):
        made.append(torch.empty(shape, dtype=torch.uint8))  # as the CUDA engine does, pinned
        return made[-1].numpy()

    pool = FramePool(allocate)
    landed = pool.land(picture(8))
    assert landed.ctypes.data == made[0].data_ptr() and (made[0] == 8).all()
    del landed
    gc.collect()
    assert pool.land(picture(9)).ctypes.data == made[0].data_ptr() and len(made) == 1


def test_threads_landing_and_dropping_never_share_a_buffer():
    pool = FramePool(limit=8)
    errors = []

    def worker(value):
        for _ in range(300):
            landed = pool.land(picture(value))
            if not (landed == value).all():
                errors.append(value)
            snapshot = landed.copy()
            landed = None if value % 2 else landed  # some let go at once, some hold a moment
            if landed is not None and not np.array_equal(landed, snapshot):
                errors.append(value)

    threads = [threading.Thread(target=worker, args=(v,)) for v in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(pool) <= 8


def test_limit_must_be_positive():
    with pytest.raises(ValueError, match="limit"):
        FramePool(limit=0)
