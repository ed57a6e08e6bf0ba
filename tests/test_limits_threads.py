"""``pixel_limit`` raises the limit for the thread that runs the block: a server's request
that raises it for a large image neither raises nor lowers another request's, and PIL's one
process-wide limit is the largest raised one while any is, then PIL's own again."""

from __future__ import annotations

import threading

from PIL import Image

from segany.limits import MAX_IMAGE_PIXELS, current_pixel_limit, pixel_limit


def test_each_thread_has_its_own_limit_and_pils_is_restored() -> None:
    pil_before = Image.MAX_IMAGE_PIXELS
    a_in, b_in, a_out, b_done = (threading.Event() for _ in range(4))
    seen: dict[str, int] = {}

    def a() -> None:
        with pixel_limit(4_000_000_000):
            a_in.set()
            b_in.wait(5)
            seen["a with b"] = current_pixel_limit()
            seen["pil with both"] = Image.MAX_IMAGE_PIXELS
        a_out.set()

    def b() -> None:
        a_in.wait(5)
        with pixel_limit(2_000_000):
            b_in.set()
            a_out.wait(5)
            seen["b after a"] = current_pixel_limit()
            seen["pil with b"] = Image.MAX_IMAGE_PIXELS
        b_done.set()

    threads = [threading.Thread(target=f) for f in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {
        "a with b": 4_000_000_000,
        "pil with both": 4_000_000_000,
        "b after a": 2_000_000,
        "pil with b": max(2_000_000, pil_before or 0),
    }
    assert current_pixel_limit() == MAX_IMAGE_PIXELS  # this thread never raised it
    assert Image.MAX_IMAGE_PIXELS == pil_before


def test_nested_blocks_in_one_thread() -> None:
    with pixel_limit(10**9):
        with pixel_limit(10**6):
            assert current_pixel_limit() == 10**6
        assert current_pixel_limit() == 10**9
    assert current_pixel_limit() == MAX_IMAGE_PIXELS
