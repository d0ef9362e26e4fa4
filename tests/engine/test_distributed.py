"""DistributedDataParallel over a reversible stack: 2 CPU processes, gloo, loopback only."""

from __future__ import annotations

import socket
import time

import distributed_worker
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
TIMEOUT_SECONDS = 180

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, list[str]]:
    """Runs the workers once for every mode (process start-up dominates); returns each mode's per-rank results."""
    directory = tmp_path_factory.mktemp("ddp")
    context = mp.start_processes(
        distributed_worker.run, args=(WORLD, free_port(), str(directory)), nprocs=WORLD, join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"DDP workers did not finish in {TIMEOUT_SECONDS} s")
    return {
        mode: [(directory / f"{mode}-rank{rank}.txt").read_text() for rank in range(WORLD)]
        for mode in distributed_worker.MODES
    }


@pytest.mark.parametrize("mode", ["plain", "no_sync", "static_graph", "exact-plain", "preserved-plain"])
def test_ddp_gradients_equal_single_process(mode: str, results) -> None:
    """Dropout, tied embeddings and a routed tensor that requires grad; no find_unused_parameters.

    preserved: reversibilize's stack, whose last adapter the loss does not use: DDP still needs no
    find_unused_parameters, and that adapter gets no gradient (or a zero one)."""
    for rank, result in enumerate(results[mode]):
        worst, nonzero = result.split()
        assert nonzero == "True", f"rank {rank}: a zero reference gradient would prove nothing"
        assert float(worst) < 1e-6, f"rank {rank}: gradients differ from single-process by {worst}"


@pytest.mark.parametrize("mode", ["fsdp2-autograd", "fsdp2-invert", "exact-fsdp2-invert"])
def test_fsdp2_per_branch_gradients_equal_single_process(mode: str, results) -> None:
    """fully_shard on each branch, CPU gloo: the recompute runs under FSDP2's own unshard/reduce-scatter hooks."""
    for rank, result in enumerate(results[mode]):
        worst, nonzero = result.split()
        assert nonzero == "True" and float(worst) < 1e-6, f"rank {rank}: {result}"


def test_fsdp2_on_a_block_container_is_refused_clearly(results) -> None:
    """revzoo calls the branches, not the block around them, so a sharded block would never be unsharded."""
    for result in results["fsdp2-block"]:
        verdict, message = result.split(maxsplit=1)
        assert verdict == "refused" and "apply_fully_shard_to_each_branch" in message  # spaces were written as _
