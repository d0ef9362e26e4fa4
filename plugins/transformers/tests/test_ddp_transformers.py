"""DDP and FSDP2 over a reversibilized transformers model: 2 CPU processes, gloo, loopback only."""

from __future__ import annotations

import socket

import ddp_worker
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_gradients_of_a_reversibilized_llama_equal_single_process(tmp_path):
    mp.start_processes(ddp_worker.run, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    for rank in range(2):
        worst, same_keys = (tmp_path / f"rank{rank}.txt").read_text().split()
        assert same_keys == "True", f"rank {rank}: DDP's gradients name other parameters"
        assert float(worst) < 1e-12, f"rank {rank}: gradients differ from single-process by {worst}"


@pytest.mark.parametrize("execution", ["invert", "autograd"])
def test_fsdp2_on_each_blocks_branches_gives_single_process_gradients(tmp_path, execution):
    mp.start_processes(ddp_worker.run_fsdp, args=(2, _free_port(), str(tmp_path), execution), nprocs=2, join=True,
                       start_method="spawn")
    for rank in range(2):
        worst, complete = (tmp_path / f"fsdp-{execution}-rank{rank}.txt").read_text().split()
        assert complete == "True", f"rank {rank}: some parameters got no gradient"
        assert float(worst) < 1e-12, f"rank {rank}: gradients differ from single-process by {worst}"


def test_accelerate_on_two_cpu_processes_gives_single_process_gradients(tmp_path):
    mp.start_processes(ddp_worker.run_accelerate, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    for rank in range(2):
        worst, kind, processes = (tmp_path / f"accelerate-rank{rank}.txt").read_text().split()
        assert kind == "DistributedType.MULTI_CPU" and processes == "2"
        assert float(worst) < 1e-12, f"rank {rank}: gradients differ from single-process by {worst}"
