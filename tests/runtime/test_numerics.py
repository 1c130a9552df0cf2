"""One thread per result, pieces side by side: the same bits for any number of threads or workers.

The work here is chosen where torch's own threading changes the bits on some CPUs (measured on an AMD EPYC with
oneDNN: the input gradient of the shipped ``insilico_cnn`` at a batch of 3 images; reductions to one value of more
than 32,768 elements; MKL's long inner products on Intel CPUs). Each is computed under the policy with 1, 2 and 3
workers and compared bit for bit with one thread.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from sharedattr.plugins.loading import get_registry
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.numerics import (
    WORKERS_ENV,
    Pieces,
    default_workers,
    environment,
    on_one_thread,
    one_thread_results,
)


def test_one_thread_results_sets_one_thread_and_restores_it():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread_results() as workers:
            assert torch.get_num_threads() == 1
            assert workers == 2 and default_workers() == 2  # the cores it found are what pieces use
            with one_thread_results() as inner:
                assert inner == 2 and torch.get_num_threads() == 1  # nested: the outer count stays
        assert torch.get_num_threads() == 2
        with one_thread_results(workers=3) as workers:
            assert workers == 3 and Pieces().workers == 3
    finally:
        torch.set_num_threads(threads)


def test_workers_come_from_the_environment_and_a_bad_value_is_one_line(monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert default_workers() == 3
    monkeypatch.setenv(WORKERS_ENV, "many")
    with pytest.raises(UserError, match=f"{WORKERS_ENV}='many' is not a whole number"):
        default_workers()


def test_pieces_come_back_in_order_with_bounded_work_in_flight():
    running, most, lock = [0], [0], threading.Lock()

    def piece(i: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            assert torch.get_num_threads() == 1  # each worker computes on one torch thread
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return i * i

    assert Pieces(3).run(piece, range(20)) == [i * i for i in range(20)]
    assert 1 <= most[0] <= 3
    assert Pieces(1).run(piece, range(5)) == [0, 1, 4, 9, 16]


def _sensitive_work() -> list:
    """Pieces whose bits change with torch's thread count on some CPUs (module docstring)."""
    backbone = get_registry().build("backbone", "insilico_cnn", layer="block3")
    g = torch.Generator().manual_seed(0)
    images = torch.rand(9, backbone.in_channels, *backbone.input_size, generator=g)
    wide = torch.randn(1, 60_000, generator=g, dtype=torch.float64)
    long = torch.randn(8, 20_000, generator=g)

    def gradient(batch: torch.Tensor) -> torch.Tensor:  # a work block of 3 images
        batch = batch.clone().requires_grad_(True)
        out = backbone(backbone.preprocess(batch))
        (grad,) = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), batch)
        return grad

    def work(piece: int) -> torch.Tensor:
        if piece < 3:
            return gradient(images[3 * piece : 3 * piece + 3])
        if piece == 3:
            return wide.sum().reshape(1)
        return long @ long.T

    return [work(i) for i in range(5)], work


def test_pieces_give_the_bits_of_one_thread_for_any_number_of_workers():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        expected, work = _sensitive_work()
        torch.set_num_threads(2)
        for workers in (1, 2, 3):
            got = Pieces(workers).run(work, range(5))
            assert all(torch.equal(a, b) for a, b in zip(got, expected)), workers
            assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(threads)


def test_a_function_on_one_thread_gives_the_same_bits_on_any_thread_count():
    @on_one_thread
    def result() -> list:
        return _sensitive_work()[0]

    threads = torch.get_num_threads()
    try:
        outs = []
        for count in (1, 2):
            torch.set_num_threads(count)
            outs.append(result())
        assert all(torch.equal(a, b) for a, b in zip(*outs))
    finally:
        torch.set_num_threads(threads)


def test_the_environment_record_names_what_decides_the_bits():
    record = environment()
    assert record["threads_per_result"] == 1 and record["workers"] >= 1
    assert record["torch"] == torch.__version__ and record["cpu_capability"]
