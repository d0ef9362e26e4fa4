"""DistributedDataParallel over a reversibilized transformers model: 2 CPU processes, gloo, loopback only."""

from __future__ import annotations

import socket

import ddp_worker
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")]


def test_ddp_gradients_of_a_reversibilized_llama_equal_single_process(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(ddp_worker.run, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    for rank in range(2):
        worst, same_keys = (tmp_path / f"rank{rank}.txt").read_text().split()
        assert same_keys == "True", f"rank {rank}: DDP's gradients name other parameters"
        assert float(worst) < 1e-12, f"rank {rank}: gradients differ from single-process by {worst}"
