"""Writes tests/fixtures/lie/: tiny lie-transformer-pytorch 0.0.17 state dicts in both key layouts, and
reference outputs of the upstream parts revzoo maps one to one (lift, pair coordinates, location
kernel, feed-forward, output head), so the importer tests need neither the upstream package nor
trust in its defective forward.

Run with the upstream package importable, e.g.
    pip install --target /tmp/lie-ref-pkgs --no-deps lie-transformer-pytorch==0.0.17 einops
    PYTHONPATH=/tmp/lie-ref-pkgs:. python tools/make_lie_fixtures.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from lie_transformer_pytorch import LieTransformer
from lie_transformer_pytorch.se3 import SE3

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "lie"
POINTS, SAMPLES = 3, 2
CONFIGS = {
    # token ids and edge type ids, sequential keys
    "sequential": dict(dim=8, num_tokens=5, num_edge_types=3, edge_dim=2, heads=2, dim_head=4, depth=2, dim_out=3),
    # raw features and raw edge vectors, reversible keys
    "reversible": dict(dim=8, edge_dim=2, heads=2, dim_head=4, depth=2, dim_out=3),
}


def upstream_model(layout: str) -> LieTransformer:
    torch.manual_seed(0 if layout == "sequential" else 1)
    model = LieTransformer(**CONFIGS[layout], nbhd=4, liftsamples=SAMPLES, reversible=layout == "reversible")
    with torch.no_grad():  # make biases and norms non-trivial so a wrong mapping shows
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "fn.weight" in name and parameter.ndim == 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model.double().eval()


def references(model: LieTransformer, layout: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(2)
    coords = torch.randn(1, POINTS, 3, dtype=torch.float64)
    group = SE3()
    algebra = group.lifted_elems(coords, SAMPLES)  # (1, POINTS * SAMPLES, 6), upstream's random lift
    rotations = group.exp(algebra)[..., :3, :3].reshape(1, POINTS, SAMPLES, 3, 3)
    pairs = group.elems2pairs(algebra)  # [i, j] = log(g_j^-1 g_i)
    edges = torch.randn(1, POINTS * SAMPLES, POINTS * SAMPLES, 2, dtype=torch.float64)
    values = torch.randn(1, POINTS * SAMPLES, 8, dtype=torch.float64)
    blocks = model.net.blocks
    attention_wrapper, feed_forward = (blocks[0].f.net, blocks[0].g.net) if layout == "reversible" else blocks[0]
    with torch.no_grad():
        kernel = attention_wrapper.attn.loc_attn_mlp(torch.cat((pairs, edges), dim=-1)).squeeze(-1)
        normed = attention_wrapper.net[0]((None, values, None, None))[1]
        feed_forward_branch = feed_forward((None, values, None, None))[1] - values
        head = model.to_logits((None, values, None, None))[1]
    return {
        "coords": coords,
        "rotations": rotations,
        "pairs": pairs,
        "edges": edges,
        "values": values,
        "kernel": kernel,
        "attention_norm": normed,
        "feed_forward_branch": feed_forward_branch,
        "head": head,
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for layout in CONFIGS:
        model = upstream_model(layout)
        state = {key: tensor.float().clone() for key, tensor in model.state_dict().items()}
        torch.save(state, OUT / f"upstream_{layout}.pt")
        model.load_state_dict(state)  # references from the float32-rounded weights that the file holds
        model.double()
        torch.save(references(model, layout), OUT / f"upstream_{layout}_reference.pt")
    for path in sorted(OUT.iterdir()):
        print(f"{path.relative_to(OUT.parent.parent.parent)}  {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
