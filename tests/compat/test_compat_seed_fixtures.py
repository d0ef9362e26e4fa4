"""revzoo.compat.lucidrains against the seeds' own reversible.py, recorded by tools/fixtures/make_seed_fixtures.py.

Runs without the upstream packages: the fixture holds their outputs and gradients on the blocks
of tests/seed_blocks.py. (tests/compat/test_compat_lucidrains_upstream.py patches the whole upstream
transformers when they are installed.)
"""

from __future__ import annotations

import pytest
import torch
from seed_blocks import dalle_layers, dalle_route, lie_layers

from helpers import FIXTURES
from revzoo.compat.lucidrains import ReversibleSequence, SequentialSequence

FIXTURE = FIXTURES / "seeds" / "reference.pt"
CASES = torch.load(FIXTURE, weights_only=True)


def _run(case: dict, execution: str = "invert"):
    """Returns compat's output, parameter gradients and input gradient on the recorded case."""
    dalle = case["inputs"].keys() == {"x", "mask"}
    depth = len({key.split(".")[0] for key in case["state"]})
    layers = (dalle_layers if dalle else lie_layers)(depth).double()
    layers.load_state_dict(case["state"])
    cls = ReversibleSequence if "reversible" in case["name"] else SequentialSequence
    stack = cls(layers, args_route=dalle_route(depth)) if dalle else cls(layers)
    stack.execution = execution
    inputs = dict(case["inputs"])
    x = inputs.pop("x").clone().requires_grad_(case["input_requires_grad"])
    out = stack(x, **inputs) if dalle else stack((inputs["coords"], x, inputs["mask"], inputs["edges"]))[1]
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach(), [p.grad for p in layers.parameters()], x.grad


def _close(got, want) -> bool:
    return (got is None) == (want is None) and (want is None or torch.allclose(got, want, atol=1e-12, rtol=0))


@pytest.mark.parametrize("name", ["dalle_reversible", "dalle_sequential", "lie_reversible", "lie_sequential"])
def test_same_output_as_the_seed(name: str) -> None:
    case = {**CASES[name], "name": name}
    out, grads, input_grad = _run(case)
    assert torch.allclose(out, case["out"], atol=1e-12, rtol=0)
    reference, reference_input = _run(case, "autograd")[1:]
    assert all(_close(got, want) for got, want in zip(grads, reference)) and _close(input_grad, reference_input)
    if name == "lie_reversible":  # the seed's defect: no input requires grad, so no block weight gets a gradient
        assert all(grad is None for grad in case["param_grads"]) and all(grad is not None for grad in grads)
    else:  # where the seed is right, the gradients are its gradients
        assert all(_close(got, want) for got, want in zip(grads, case["param_grads"]))
        assert _close(input_grad, case["input_grad"])
