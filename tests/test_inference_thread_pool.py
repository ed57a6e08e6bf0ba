"""map_ordered: pieces of CPU work side by side, one torch thread each, results in order."""

import threading

import pytest
import torch

from segany.inference.thread_pool import map_ordered


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_pieces_run_side_by_side_with_one_torch_thread_each(two_threads):
    both = threading.Barrier(2, timeout=30)  # passes only if two pieces run at once
    seen: list[tuple[int, int, int]] = []

    def piece(x: int) -> int:
        if x < 2:
            both.wait()
        seen.append((x, threading.get_ident(), torch.get_num_threads()))
        return x * x

    assert map_ordered(piece, range(7)) == [x * x for x in range(7)]
    assert {threads for _, _, threads in seen} == {1}
    assert threading.get_ident() not in {ident for _, ident, _ in seen}
    assert torch.get_num_threads() == 2  # the caller's setting is left alone
    # a thread started afterwards gets the caller's count, not the workers' 1
    later: list[int] = []
    t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert later == [2]


def test_one_torch_thread_runs_in_the_calling_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        idents = map_ordered(lambda _: threading.get_ident(), range(3))
    finally:
        torch.set_num_threads(before)
    assert set(idents) == {threading.get_ident()}


def test_errors_and_modes_reach_the_caller(two_threads):
    def fail(x: int) -> int:
        if x == 3:
            raise ValueError("piece 3")
        return x

    with pytest.raises(ValueError, match="piece 3"):
        map_ordered(fail, range(5))
    with torch.inference_mode():
        assert map_ordered(lambda _: torch.is_inference_mode_enabled(), range(4)) == [True] * 4
    with torch.no_grad():
        assert map_ordered(lambda _: torch.is_grad_enabled(), range(4)) == [False] * 4
    assert map_ordered(lambda _: torch.is_grad_enabled(), range(4)) == [True] * 4
