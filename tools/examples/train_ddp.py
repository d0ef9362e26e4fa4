"""Train a small `dalle-rev` with DistributedDataParallel on synthetic data.

Launch:  torchrun --nproc_per_node 2 tools/examples/train_ddp.py [--steps 5] [--out dalle-ddp.safetensors]
Each rank prints its loss, step time and peak resident memory; rank 0 saves a revzoo checkpoint.
On CPU the backend is gloo; with one GPU per rank it is nccl.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import revzoo

CONFIG = dict(dim=64, depth=4, heads=4, dim_head=16, num_text_tokens=100, text_seq_len=16, image_size=32,
              num_image_tokens=64, vae_num_layers=2, ff_dropout=0.1, attn_dropout=0.1, share_input_output_emb=True)


def synthetic_batch(model, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    text = torch.randint(1, CONFIG["num_text_tokens"], (batch, model.text_seq_len), generator=generator)
    image = torch.randint(0, model.num_image_tokens, (batch, model.image_seq_len), generator=generator)
    return text, image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4, help="per rank")
    parser.add_argument("--out", default="dalle-ddp.safetensors")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    torch.manual_seed(0)  # the same initial weights on every rank
    model = revzoo.create("dalle-rev", **CONFIG).to(device)
    ddp = DistributedDataParallel(model)  # no find_unused_parameters: every parameter gets its gradient
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=3e-4)
    generator = torch.Generator().manual_seed(1 + rank)  # each rank its own shard of the data
    torch.manual_seed(100 + rank)  # and its own dropout masks

    for step in range(args.steps):
        text, image = (t.to(device) for t in synthetic_batch(model, args.batch, generator))
        start = time.perf_counter()
        loss = ddp(text, image, return_loss=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"rank {rank}/{world} step {step}: loss {loss.item():.4f}  {seconds * 1000:.0f} ms  "
              f"peak RSS {peak_mib:.0f} MiB", flush=True)

    dist.barrier()
    if rank == 0:
        path = revzoo.save(model, args.out)
        print(f"rank 0 saved {path}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
