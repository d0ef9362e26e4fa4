"""The invert execution on a device: gradients equal plain autograd's on CUDA, in float32 and under bf16 autocast.

Every test runs on CUDA (its id contains "cuda", so `pytest -k cuda` selects exactly those, and they skip without
CUDA); the CPU variants of the same checks keep the tests themselves honest on machines without a GPU.

Tolerances (`_assert_close`). float32: each gradient within 1e-4 of plain autograd's, relative to its largest
magnitude (inversion reconstructs each block's inputs to the last bits of float32, and the gradients inherit that).
bf16 autocast: each gradient within 2e-2 in relative Frobenius norm: the branches' matmuls round to bf16 (8 bits of
mantissa), and a reconstructed input that differs from the original in its last float32 bit can round differently.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import revzoo
from helpers import pairs
from revzoo.bench._models import to_device

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=needs_cuda)]
PRECISIONS = ["float32", "bf16"]
FLOAT32_TOLERANCE = 1e-4  # of the largest magnitude of each gradient
BF16_TOLERANCE = 2e-2  # relative Frobenius norm of each gradient's difference
PLUGIN_OPTIONS = {  # the small config of each built-in architecture, at depth 2 and with its dropouts on
    "dalle": {"depth": 2, "image_size": 32, "attn_dropout": 0.2, "ff_dropout": 0.2},
    "lie-transformer": {"depth": 2},  # no dropout; its lift and neighbourhood sampling are random per call
    "vit-tiny": {"depth": 2, "img_size": 32, "proj_drop_rate": 0.2, "attn_drop_rate": 0.2, "drop_path_rate": 0.2},
}


def _autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    return torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def _gradients(model: nn.Module, execution: str, run: Callable[[], torch.Tensor], leaves: list[torch.Tensor],
               seed: int = 1234) -> list[torch.Tensor]:
    """Returns the gradients of `leaves` of `run()` in `execution`, under a fixed seed (the same dropout masks)."""
    revzoo.set_execution(model, execution)
    for leaf in leaves:
        leaf.grad = None
    torch.manual_seed(seed)
    run().backward()
    return [leaf.grad.clone() for leaf in leaves]


def _assert_close(reference: list[torch.Tensor], inverted: list[torch.Tensor], precision: str) -> None:
    """Each gradient's error relative to its magnitude, or to a hundredth of the largest gradient's when its own is
    smaller (a gradient that is zero mathematically, as a bias before a softmax has, holds only rounding noise)."""
    assert len(reference) == len(inverted) > 0
    assert sum(bool(g.abs().max() > 0) for g in reference) > len(reference) // 2  # the comparison can fail
    size = torch.linalg.vector_norm if precision == "bf16" else (lambda t: t.abs().max())
    tolerance = BF16_TOLERANCE if precision == "bf16" else FLOAT32_TOLERANCE
    floor = max(size(want).item() for want in reference) / 100
    for index, (want, got) in enumerate(zip(reference, inverted)):
        error = size(got - want).item() / max(size(want).item(), floor)
        assert error <= tolerance, f"gradient {index} ({tuple(want.shape)}): error {error:.2e} > {tolerance:.0e}"


def _engine_stack(device: str, depth: int = 3, dim: int = 32) -> tuple[revzoo.ReversibleSequence, torch.Tensor]:
    torch.manual_seed(0)
    stack = revzoo.ReversibleSequence(pairs(depth, dim, dropout=0.2), routes={"scale": "both"}).to(device).train()
    return stack, torch.randn(4, dim, device=device)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_engine_invert_equals_autograd_with_dropout(device: str, precision: str) -> None:
    stack, x = _engine_stack(device)
    x.requires_grad_()
    scale = torch.randn(4, 32, device=device, requires_grad=True)  # a routed tensor that requires grad
    weight = torch.randn(4, 32, device=device)

    def run() -> torch.Tensor:
        with _autocast(device, precision):
            out = stack(x, scale=scale)
        return (out.float() * weight).sum()

    leaves = [x, scale, *stack.parameters()]
    _assert_close(_gradients(stack, "autograd", run, leaves), _gradients(stack, "invert", run, leaves), precision)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(PLUGIN_OPTIONS))
def test_plugin_invert_equals_autograd(name: str, device: str, precision: str, builtin_plugins: list[str]) -> None:
    if name == "lie-transformer" and precision == "bf16" and device == "cpu":
        pytest.skip("CPU bf16 autocast of the Lie-transformer's gathers is slow and covered on CUDA")
    spec = revzoo.get_architecture(name)
    torch.manual_seed(0)
    model = revzoo.create(name, form="reversible", **{**spec.small, **PLUGIN_OPTIONS[name]}).to(device).train()

    def run() -> torch.Tensor:
        args, kwargs = spec.example_inputs(model, torch.Generator().manual_seed(0))  # fresh: its generators advance
        with _autocast(device, precision):
            outputs = model(*to_device(args, device), **to_device(kwargs, device))
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        return sum(out.float().square().mean() for out in outputs if isinstance(out, torch.Tensor) and out.requires_grad)

    leaves = [p for p in model.parameters() if p.requires_grad]
    _assert_close(_gradients(model, "autograd", run, leaves), _gradients(model, "invert", run, leaves), precision)


def _rng_states(device: str) -> list[torch.Tensor]:
    return [torch.get_rng_state(), *([torch.cuda.get_rng_state(device)] if device == "cuda" else [])]


@pytest.mark.parametrize("device", DEVICES)
def test_backward_leaves_the_callers_rng_as_forward_left_it(device: str) -> None:
    """Backward recomputes every block's dropout under the forward's RNG state, then puts the caller's back: the
    caller's stream after forward + backward is the same in both executions, and backward does not move it."""
    after: dict[str, list[list[torch.Tensor]]] = {}
    for execution in ("autograd", "invert"):
        stack, x = _engine_stack(device)
        stack.execution = execution
        torch.manual_seed(7)
        if device == "cuda":
            torch.cuda.manual_seed(7)
        out = stack(x.requires_grad_())
        after_forward = _rng_states(device)
        out.square().sum().backward()
        after[execution] = [after_forward, _rng_states(device)]
        for before, now in zip(*after[execution]):
            assert torch.equal(before, now), f"{execution}: backward moved the caller's RNG"
    for want, got in zip(after["autograd"][0], after["invert"][0]):
        assert torch.equal(want, got), "forward consumed the RNG differently in the two executions"


@needs_cuda
def test_model_moved_between_cpu_and_cuda() -> None:
    """The call's state follows the tensors of each call: a model moved to CUDA and back inverts exactly each time."""
    stack, x = _engine_stack("cpu")
    x.requires_grad_()
    for device in ("cpu", "cuda", "cpu"):
        stack.to(device)
        inputs = x.detach().to(device).requires_grad_()
        run = lambda inputs=inputs: stack(inputs).square().sum()  # noqa: E731
        leaves = [inputs, *stack.parameters()]
        _assert_close(_gradients(stack, "autograd", run, leaves), _gradients(stack, "invert", run, leaves), "float32")
        assert all(p.grad.device.type == device for p in stack.parameters())


@needs_cuda
def test_forward_adds_no_host_device_sync_per_block_cuda() -> None:
    """The invert execution's forward keeps the host ahead of the device: no synchronising call at any depth
    (`torch.cuda.set_sync_debug_mode("error")` makes any synchronising call raise)."""
    stack, x = _engine_stack("cuda", depth=6)
    stack(x)  # warm-up: first calls may initialise kernels and the allocator
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError):
            x.sum().item()  # the mode is in force: a synchronising call raises
        for execution in ("invert", "autograd"):
            stack.execution = execution
            stack(x.requires_grad_())
    finally:
        torch.cuda.set_sync_debug_mode(previous)


class _SdpaBranch(nn.Module):
    """Self-attention through F.scaled_dot_product_attention, with dropout, and an optional boolean key mask."""

    def __init__(self, dim: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=0.1,
                                                  is_causal=mask is None)
        return self.out(attended.transpose(1, 2).reshape(batch, length, dim))


@needs_cuda
@pytest.mark.parametrize("masked", [False, True], ids=["causal", "key-mask"])
@pytest.mark.parametrize("backend", ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH"])
def test_sdpa_kernels_invert_equals_autograd_under_bf16_cuda(backend: str, masked: bool) -> None:
    """SDPA's fused kernels draw their dropout from the CUDA generator too: the recompute must see the same masks."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if backend == "FLASH_ATTENTION" and masked:
        pytest.skip("the flash kernel takes no attention mask")
    torch.manual_seed(0)
    dim = 64
    blocks = [(_SdpaBranch(dim), _SdpaBranch(dim)) for _ in range(3)]
    stack = revzoo.ReversibleSequence(blocks, routes={"mask": "both"}).cuda().train()
    x = torch.randn(2, 16, dim, device="cuda", requires_grad=True)
    kwargs = {}
    if masked:
        mask = torch.ones(2, 16, dtype=torch.bool, device="cuda")
        mask[1, -4:] = False
        kwargs["mask"] = mask

    def run() -> torch.Tensor:
        with sdpa_kernel(getattr(SDPBackend, backend)), torch.autocast("cuda", dtype=torch.bfloat16):
            return stack(x, **kwargs).float().square().sum()

    leaves = [x, *stack.parameters()]
    _assert_close(_gradients(stack, "autograd", run, leaves), _gradients(stack, "invert", run, leaves), "bf16")
