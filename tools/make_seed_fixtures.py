"""Makes tests/fixtures/seeds/reference.pt: the seeds' own reversible.py on small blocks (run once; committed).

Needs the upstream packages (only their reversible.py is used):
    pip install --target DIR --no-deps dalle-pytorch==1.6.6 lie-transformer-pytorch==0.0.17
    PYTHONPATH=DIR python tools/make_seed_fixtures.py

Each case holds the blocks' weights (tests/seed_blocks.py), the inputs, and upstream's output
and gradients, so that tests/compat/test_compat_seed_fixtures.py checks revzoo.compat.lucidrains
against the seeds without installing them.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from seed_blocks import dalle_layers, dalle_route, lie_layers  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "seeds" / "reference.pt"


def _seed_module(package: str) -> types.ModuleType:
    """Returns `package.reversible` without running the package's __init__ (which imports the whole model)."""
    spec = importlib.util.find_spec(package)
    stub = types.ModuleType(package)
    stub.__path__ = list(spec.submodule_search_locations)
    sys.modules[package] = stub
    return importlib.import_module(f"{package}.reversible")


def _run(stack, layers, args: tuple, kwargs: dict, inputs: dict) -> dict:
    out = stack(*args, **kwargs)
    out = out[1] if isinstance(out, tuple) else out
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    if out.requires_grad:  # the Lie seed's reversible output has no graph when its input needs no grad
        (out * weights).sum().backward()
    return {
        "state": {k: v.clone() for k, v in layers.state_dict().items()},
        "inputs": {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()},
        "input_requires_grad": inputs["x"].requires_grad,
        "out": out.detach().clone(),
        "param_grads": [None if p.grad is None else p.grad.clone() for p in layers.parameters()],
        "input_grad": None if inputs["x"].grad is None else inputs["x"].grad.clone(),
    }


def main() -> None:
    torch.set_default_dtype(torch.float64)
    dalle, lie = _seed_module("dalle_pytorch"), _seed_module("lie_transformer_pytorch")
    cases = {}
    for name, cls in (("dalle_reversible", dalle.ReversibleSequence), ("dalle_sequential", dalle.SequentialSequence)):
        torch.manual_seed(1)
        layers = dalle_layers(3)
        x = torch.randn(2, 5, 4, requires_grad=True)
        mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
        stack = cls(layers, args_route=dalle_route(3))
        cases[name] = _run(stack, layers, (x,), {"mask": mask}, {"x": x, "mask": mask})
    for name, cls in (("lie_reversible", lie.ReversibleSequence), ("lie_sequential", lie.SequentialSequence)):
        torch.manual_seed(2)
        layers = lie_layers(2)
        x = torch.randn(2, 5, 4)  # values that do not require grad, as data usually is
        coords, edges = torch.randn(2, 5, 3), torch.randn(2, 5, 5, 1)
        mask = torch.tensor([[True] * 5, [True] * 4 + [False]])
        stack = cls(layers)
        cases[name] = _run(stack, layers, ((coords, x, mask, edges),), {},
                           {"x": x, "coords": coords, "mask": mask, "edges": edges})
    cases["versions"] = {"dalle-pytorch": "1.6.6", "lie-transformer-pytorch": "0.0.17"}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save(cases, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
