"""revzoo.compat.lucidrains: the seeds' signatures, routes, tuple data and keys, with revzoo's gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from revzoo.compat.lucidrains import ReversibleSequence, SequentialSequence

DTYPE = torch.float64


class Recorder(nn.Module):
    """A branch that records the keyword arguments it got; `mask` (if given) scales its output."""

    def __init__(self, dim: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim, dtype=DTYPE)
        self.dropout = nn.Dropout(dropout)
        self.seen: list[set[str]] = []

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        self.seen.append(set(kwargs))
        out = self.dropout(torch.tanh(self.linear(x)))
        return out * kwargs["mask"] if "mask" in kwargs else out


class TupleBranch(nn.Module):
    """A Lie-seed branch: takes (coords, values, mask, edges), returns the tuple with new values."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim, dtype=DTYPE)
        self.edge = nn.Linear(1, dim, dtype=DTYPE)

    def forward(self, data: tuple) -> tuple:
        coords, values, mask, edges = data
        out = torch.tanh(self.linear(values) * coords.sum(-1, keepdim=True) + self.edge(edges).mean(2))
        return coords, out * mask[..., None], mask, edges


def _layers(depth: int, make=Recorder, **options) -> nn.ModuleList:
    torch.manual_seed(0)
    return nn.ModuleList(nn.ModuleList([make(**options), make(**options)]) for _ in range(depth))


def _dalle_routes(depth: int) -> dict:
    return {"mask": ((True, False),) * depth, "cache": ((True, True),) * depth}


def test_reversible_computes_the_seeds_function_and_keys() -> None:
    layers = _layers(2)
    stack = ReversibleSequence(layers, args_route=_dalle_routes(2))
    x, mask = torch.randn(2, 3, 4, dtype=DTYPE), torch.rand(2, 3, 1, dtype=DTYPE)
    x1 = x2 = x
    for f, g in layers:
        x1 = x1 + f(x2, mask=mask)
        x2 = x2 + g(x1)
    assert torch.allclose(stack(x, mask=mask), (x1 + x2) / 2, atol=1e-14)
    assert "blocks.0.f.net.linear.weight" in stack.state_dict() and "blocks.1.g.net.linear.bias" in stack.state_dict()


def test_args_route_sends_each_argument_where_the_seed_does() -> None:
    layers = _layers(2)
    stack = SequentialSequence(layers, args_route={"mask": ((True, False), (False, True)), "cache": ((True, True),) * 2})
    stack(torch.randn(1, 3, 4, dtype=DTYPE), mask=torch.ones(1, 3, 1, dtype=DTYPE), cache={})
    assert [branch.seen for pair in layers for branch in pair] == [  # the sequential form calls each once
        [{"mask", "cache"}], [{"cache"}], [{"cache"}], [{"mask", "cache"}]
    ]


def test_without_args_route_keyword_arguments_reach_every_branch() -> None:
    layers = _layers(2)
    ReversibleSequence(layers)(torch.randn(1, 3, 4, dtype=DTYPE), mask=torch.ones(1, 3, 1, dtype=DTYPE))
    assert all(branch.seen and all(seen == {"mask"} for seen in branch.seen) for pair in layers for branch in pair)


def test_an_argument_args_route_does_not_name_is_refused_not_dropped() -> None:
    stack = ReversibleSequence(_layers(2), args_route=_dalle_routes(2))
    with pytest.raises(TypeError, match=r"\['rotary_pos_emb'\] reach no block"):
        stack(torch.randn(1, 3, 4, dtype=DTYPE), rotary_pos_emb=torch.zeros(1))


@pytest.mark.parametrize("args_route, message", [
    ({"mask": ((True, False),)}, r"args_route\['mask'\] must give \(to_f, to_g\) for each of the 2 blocks"),
    ({"mask": ((True, False), "f")}, r"args_route\['mask'\]\[1\] must be \(to_f, to_g\) booleans"),
])
def test_bad_args_route_is_one_clear_error(args_route, message) -> None:
    with pytest.raises(ValueError, match=message):
        SequentialSequence(_layers(2), args_route=args_route)


def test_layer_dropout_other_than_zero_is_refused() -> None:
    SequentialSequence(_layers(1), layer_dropout=0.0)
    with pytest.raises(ValueError, match=r"layer_dropout=0.1 is not supported.*pass layer_dropout=0"):
        SequentialSequence(_layers(1), layer_dropout=0.1)


@pytest.mark.parametrize("seed_attribute", ["layers", "blocks"])  # DALLE's seed, the Lie seed
def test_sequential_keeps_the_seeds_keys_and_loads_its_state_dict(seed_attribute: str) -> None:
    seed_layers = _layers(2)
    seed_state = {f"{seed_attribute}.{k}": v for k, v in seed_layers.state_dict().items()}
    stack = SequentialSequence(_layers(2, dropout=0.0))
    assert sorted(stack.state_dict()) == sorted(k.replace("blocks.", "layers.", 1) for k in seed_state)
    for tensor in stack.parameters():
        nn.init.zeros_(tensor)
    stack.load_state_dict(seed_state)
    x = torch.randn(2, 3, 4, dtype=DTYPE)
    expected = x
    for f, g in seed_layers:
        expected = expected + f(expected)
        expected = expected + g(expected)
    assert torch.allclose(stack(x), expected, atol=1e-14)
    outer = nn.Sequential(stack)
    assert "0.layers.1.1.linear.weight" in outer.state_dict()
    outer.load_state_dict(outer.state_dict())


def _grads(stack: nn.Module, inputs: list[torch.Tensor], call) -> list[torch.Tensor]:
    torch.manual_seed(5)
    out = call()
    out = out[1] if isinstance(out, tuple) else out
    weights = torch.randn_like(out)
    tensors = [*stack.parameters(), *(t for t in inputs if t.requires_grad)]
    return torch.autograd.grad((out * weights).sum(), tensors, allow_unused=True)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_invert_gradients_equal_autograd_with_dropout_and_tuple_data(depth: int) -> None:
    stack = ReversibleSequence(_layers(depth, TupleBranch))
    coords = torch.randn(2, 5, 3, dtype=DTYPE, requires_grad=True)  # context that requires grad
    values = torch.randn(2, 5, 4, dtype=DTYPE)  # a stream that does not
    mask = torch.ones(2, 5, dtype=DTYPE)
    edges = torch.randn(2, 5, 5, 1, dtype=DTYPE)
    data = (coords, values, mask, edges)
    grads = {}
    for execution in ("invert", "autograd"):
        stack.execution = execution
        grads[execution] = _grads(stack, [coords], lambda: stack(data))
    for got, want in zip(grads["invert"], grads["autograd"]):
        assert want is not None and torch.allclose(got, want, atol=1e-10, rtol=0)
    out = stack(data)
    assert isinstance(out, tuple) and out[0] is coords and out[2] is mask and out[3] is edges


def test_invert_gradients_equal_autograd_with_dropout_and_routes() -> None:
    stack = ReversibleSequence(_layers(3, dropout=0.2), args_route=_dalle_routes(3))
    x = torch.randn(2, 3, 4, dtype=DTYPE, requires_grad=True)
    mask = torch.rand(2, 3, 1, dtype=DTYPE, requires_grad=True)
    grads = {}
    for execution in ("invert", "autograd"):
        stack.execution = execution
        grads[execution] = _grads(stack, [x, mask], lambda: stack(x, mask=mask, cache={}))
    for got, want in zip(grads["invert"], grads["autograd"]):
        assert torch.allclose(got, want, atol=1e-10, rtol=0)


def test_sequential_tuple_data_adds_the_branchs_element_one() -> None:
    layers = _layers(1, TupleBranch)
    stack = SequentialSequence(layers)
    data = (torch.randn(1, 2, 3, dtype=DTYPE), torch.randn(1, 2, 4, dtype=DTYPE), torch.ones(1, 2, dtype=DTYPE),
            torch.randn(1, 2, 2, 1, dtype=DTYPE))
    f, g = layers[0]
    middle = (data[0], data[1] + f(data)[1], *data[2:])
    expected = middle[1] + g(middle)[1]
    assert torch.allclose(stack(data)[1], expected, atol=1e-14)
