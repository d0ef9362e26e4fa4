"""What each process runs in the distributed tests (importable, so `spawn` can find it)."""

from __future__ import annotations

import datetime
import os
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import revzoo
from helpers import Branch

VOCAB, DIM, DEPTH, BATCH, LENGTH = 13, 8, 3, 4, 5


class TiedRoutedModel(nn.Module):
    """Tied input/output embeddings, a learned position tensor routed to f (context that requires grad), dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.positions = nn.Parameter(torch.randn(LENGTH, DIM) * 0.1)
        blocks = [(Branch(DIM, dropout=0.3), Branch(DIM, dropout=0.3)) for _ in range(DEPTH)]
        self.stack = revzoo.ReversibleSequence(blocks, routes={"position": "f"})
        self.head = nn.Linear(DIM, VOCAB, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.stack(self.embed(tokens), position=self.positions.expand(tokens.shape[0], -1, -1))
        return nn.functional.cross_entropy(self.head(hidden).flatten(0, 1), tokens.flatten())


def batches(steps: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, VOCAB, (BATCH, LENGTH), generator=generator) for _ in range(steps)]


def reference_grads(model: nn.Module, steps: list[torch.Tensor], world: int) -> dict[str, torch.Tensor | None]:
    """Single process: every shard of every micro-batch, seeded as its rank is, loss scaled as DDP averages.

    None for a parameter the loss does not use (the last adapter of a reversibilized stack)."""
    model.zero_grad()
    for step, tokens in enumerate(steps):
        for rank, shard in enumerate(tokens.chunk(world)):
            torch.manual_seed(1000 * step + rank)
            (model(shard) / world).backward()
    return {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}


MODES = (
    "plain", "no_sync", "static_graph", "fsdp2-autograd", "fsdp2-invert", "fsdp2-block", "exact-plain", "exact-fsdp2-invert",
    "preserved-plain",
)


def run(rank: int, world: int, port: int, result_dir: str) -> None:
    """Trains under DDP in each mode; writes, per mode, the worst difference from single-process gradients."""
    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
            timeout=datetime.timedelta(seconds=60),
        )
        for mode in MODES:
            Path(result_dir, f"{mode}-rank{rank}.txt").write_text(_compare(rank, world, mode))
        dist.barrier()
    except Exception:
        Path(result_dir, f"error-rank{rank}.txt").write_text(traceback.format_exc())
        raise
    # Every result is written and both ranks are done. Leave without torch's teardown: in about
    # a third of runs here, gloo/FSDP2 teardown on CPU aborts the process ("terminate called
    # without an active exception") after all the work, which would fail the test for nothing.
    os._exit(0)


def _fully_shard(model: TiedRoutedModel, world: int, per_branch: bool) -> TiedRoutedModel:
    """Shards each branch (what revzoo supports), or each block container (what it refuses), then the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    for block in model.stack.blocks:
        for module in (block.f, block.g) if per_branch else (block,):
            fully_shard(module, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _compare(rank: int, world: int, mode: str) -> str:
    torch.manual_seed(0)
    model = TiedRoutedModel()
    reference = revzoo.set_execution(TiedRoutedModel(), "autograd")  # plain autograd, one process
    reference.load_state_dict(model.state_dict())
    if mode.startswith("exact-"):  # a scaled, swapped coupling in exact arithmetic, in both
        mode = mode.removeprefix("exact-")
        for each in (model, reference):
            each.stack.set_coupling(revzoo.Coupling((0.5, 0.5), swap=True), exact=True)
    if mode.startswith("preserved-"):  # reversibilize: MEFT's coupling at 1/8, exact, an adapter per block
        mode = mode.removeprefix("preserved-")
        for each in (model, reference):
            revzoo.reversibilize(each, scale=0.125, adapter_dim=4, example_inputs=((batches(1)[0],), {}))
        for block in model.stack.blocks:  # as if trained: a zero up-projection would give its inputs no gradient
            nn.init.normal_(block.adapter.up.weight, std=0.5)
        reference.load_state_dict(model.state_dict())
    steps = batches(2)  # static_graph only uses its recorded graph from the second iteration
    if mode.startswith("fsdp2"):
        revzoo.set_execution(model, "autograd" if mode == "fsdp2-autograd" else "invert")
        wrapped = _fully_shard(model, world, per_branch=mode != "fsdp2-block")
        if mode == "fsdp2-block":
            try:
                wrapped(steps[0].chunk(world)[rank]).backward()
            except NotImplementedError as err:
                return "refused " + str(err).replace(" ", "_")
            return "accepted -"
    else:
        wrapped = DistributedDataParallel(model, static_graph=(mode == "static_graph"))
    for step, tokens in enumerate(steps):
        torch.manual_seed(1000 * step + rank)
        shard = tokens.chunk(world)[rank]
        if mode == "no_sync" and step == 0:
            with wrapped.no_sync():  # accumulated locally, synchronised by the next backward
                wrapped(shard).backward()
        else:
            wrapped(shard).backward()
    expected = reference_grads(reference, steps, world)
    got = {name: getattr(p.grad, "full_tensor", lambda g=p.grad: g)() for name, p in model.named_parameters()}
    used = [n for n in expected if expected[n] is not None]
    worst = max((got[n] - expected[n]).abs().max().item() for n in used)
    if any(got[n] is not None and got[n].any() for n in set(expected) - set(used)):
        worst = float("inf")  # a parameter the loss does not use got a gradient
    nonzero = all(expected[n].abs().max() > 0 for n in used)
    return f"{worst} {nonzero}"
