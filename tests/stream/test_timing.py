"""stream.timing: callables timed in blocks, in turn, after one settling call each turn."""

from stream.timing import alternating


def test_each_turn_settles_then_times_a_block_of_one_callable():
    calls = []
    runs = [lambda: calls.append("a"), lambda: calls.append("b")]
    ms = alternating(runs, warmup=1, iters=3, block=2)
    turn_a, turn_b = ["a"] * 3, ["b"] * 3  # one settling call, then the block of two
    assert calls == ["a", "b"] + (turn_a + turn_b) * 2  # 3 calls round up to two blocks
    assert [len(m) for m in ms] == [4, 4]
    assert all(t >= 0 for m in ms for t in m)
