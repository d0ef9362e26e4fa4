"""A rank training a reversibilized tiny Llama on its half of a batch under DDP or FSDP2 (test_ddp_transformers)."""

from __future__ import annotations

import os
import warnings

import torch
import torch.distributed as dist
from tiny import tiny, tokens

import revzoo


def model() -> torch.nn.Module:
    converted = revzoo.reversibilize(tiny("llama"), scale=1 / 32).train()
    with torch.no_grad():
        for name, parameter in converted.named_parameters():
            if ".adapter." in name:
                parameter.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return converted


def grads(network: torch.nn.Module, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    network.zero_grad()
    network(input_ids=ids, labels=ids).loss.backward()
    return {name.removeprefix("module."): p.grad.clone() for name, p in network.named_parameters() if p.grad is not None}


def run(rank: int, world: int, port: int, result_dir: str) -> None:
    warnings.simplefilter("ignore")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        ids = tokens(batch=2 * world, length=12, seed=4)
        reference = grads(model(), ids)
        distributed = torch.nn.parallel.DistributedDataParallel(model())
        got = grads(distributed, ids[rank::world])
        worst = max((got[name] - want).abs().max().item() for name, want in reference.items())
        # a parameter the loss does not use (the last adapter, under output="f") has no gradient, or DDP's zero one
        same_keys = reference.keys() <= got.keys() and all(not got[name].any() for name in got.keys() - reference.keys())
        with open(os.path.join(result_dir, f"rank{rank}.txt"), "w") as handle:
            handle.write(f"{worst} {same_keys}")
    finally:
        dist.destroy_process_group()


def run_fsdp(rank: int, world: int, port: int, result_dir: str, execution: str) -> None:
    """FSDP2's fully_shard on each block's branches (the layer, borrowed by its F, and the adapter), then the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    warnings.simplefilter("ignore")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    ids = tokens(batch=2 * world, length=12, seed=4)
    reference = grads(model(), ids)
    sharded = revzoo.set_execution(model(), execution)
    mesh = init_device_mesh("cpu", (world,))
    for block in sharded.model.revzoo_stack.blocks:
        fully_shard(block.f, mesh=mesh)
        fully_shard(block.g, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    sharded.zero_grad()
    sharded(input_ids=ids[rank::world], labels=ids[rank::world]).loss.backward()
    got = {name: p.grad.full_tensor() for name, p in sharded.named_parameters() if p.grad is not None}
    worst = max((got[name] - want).abs().max().item() for name, want in reference.items())
    with open(os.path.join(result_dir, f"fsdp-{execution}-rank{rank}.txt"), "w") as handle:
        handle.write(f"{worst} {reference.keys() <= got.keys()}")
    os._exit(0)  # gloo/FSDP2 teardown on the CPU sometimes aborts after the work (see tests/engine/distributed_worker.py)


def run_accelerate(rank: int, world: int, port: int, result_dir: str) -> None:
    """accelerate's Accelerator on 2 CPU processes (MULTI_CPU: DDP over gloo), as `accelerate launch` sets it up."""
    from accelerate import Accelerator

    warnings.simplefilter("ignore")
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    accelerator = Accelerator(cpu=True)
    torch.set_num_threads(1)
    ids = tokens(batch=2 * world, length=12, seed=4)
    reference = grads(model(), ids)
    network = model()
    network, _ = accelerator.prepare(network, torch.optim.SGD(network.parameters(), lr=0.1))
    rows = ids[rank::world]
    accelerator.backward(network(input_ids=rows, labels=rows).loss)
    got = {name.removeprefix("module."): p.grad for name, p in network.named_parameters() if p.grad is not None}
    worst = max((got[name] - want).abs().max().item() for name, want in reference.items())
    with open(os.path.join(result_dir, f"accelerate-rank{rank}.txt"), "w") as handle:
        handle.write(f"{worst} {accelerator.state.distributed_type} {accelerator.num_processes}")
    os._exit(0)
