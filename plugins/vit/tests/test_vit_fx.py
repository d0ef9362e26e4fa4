"""RevViT under torch.fx (timm's tracer, torchvision's create_feature_extractor) and forward hooks.

The reversible stack stays one node of the graph (one autograd Function chain under "invert"),
so a traced RevViT computes, and differentiates, exactly what the eager one does.
"""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import create_feature_extractor as timm_feature_extractor
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import revzoo

pytest.importorskip("revzoo_vit.timm_models")  # timm.create_model on revzoo's names, for the feature wrappers

SMALL = dict(img_size=32, depth=3, embed_dim=32, num_heads=2, num_classes=5)
LEAF = {"leaf_modules": [revzoo.ReversibleSequence]}


def small(name: str, **overrides) -> revzoo.ZooModel:
    torch.manual_seed(0)
    return revzoo.create(name, **{**SMALL, **overrides}).double()


def images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def block_tokens(model, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
    """The token outputs after the blocks in `indices`, prefix tokens included, from forward_intermediates."""
    taken = model.forward_intermediates(x, indices, output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True)
    return [torch.cat([prefix, patches], dim=1) for patches, prefix in taken]


def stack_nodes(graph: torch.fx.Graph) -> list[str]:
    return [str(node.target) for node in graph.nodes if node.op == "call_module" and str(node.target).startswith("blocks")]


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("execution", ["invert", "autograd"])
@pytest.mark.parametrize("name", ["vit-tiny-rev", "vit-tiny"])
def test_a_traced_revvit_keeps_the_stack_one_node_and_equals_eager(builtin_plugins, name, execution):
    model = small(name, drop_path_rate=0.1).train()
    revzoo.set_execution(model, execution)
    traced = timm_feature_extractor(model, ["head"])  # timm's tracer: its fx tests and FeatureGraphNet use it
    assert stack_nodes(traced.graph) == ["blocks"]
    x = images().requires_grad_()
    results = {}
    for run, call in (("eager", model), ("traced", lambda x: traced(x)["head"])):
        model.zero_grad()
        x.grad = None
        torch.manual_seed(3)  # the same drop-path draws
        out = call(x)
        out.square().sum().backward()
        results[run] = out.detach(), grads(model), x.grad.clone()
    (eager, eager_grads, eager_input), (fx, fx_grads, fx_input) = results["eager"], results["traced"]
    torch.testing.assert_close(fx, eager, atol=0, rtol=0)
    assert fx_grads.keys() == eager_grads.keys() == dict(model.named_parameters()).keys()
    for key in eager_grads:
        torch.testing.assert_close(fx_grads[key], eager_grads[key], atol=0, rtol=0, msg=key)
    torch.testing.assert_close(fx_input, eager_input, atol=0, rtol=0)


def test_invert_gradients_through_the_traced_graph_equal_autograd(builtin_plugins):
    runs = {}
    for execution in ("invert", "autograd"):
        model = small("vit-tiny-rev").train()
        revzoo.set_execution(model, execution)
        timm_feature_extractor(model, ["head"])(images())["head"].square().sum().backward()
        runs[execution] = grads(model)
    for key in runs["autograd"]:
        torch.testing.assert_close(runs["invert"][key], runs["autograd"][key], atol=1e-10, rtol=0, msg=key)


def test_torchvision_create_feature_extractor_on_a_revvit(builtin_plugins):
    model = small("vit-tiny-rev").eval()
    x = images()
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=LEAF)
    assert "blocks" in eval_nodes and not [node for node in eval_nodes if node.startswith("blocks.")]
    extractor = create_feature_extractor(
        model, {"blocks": "tokens", "norm": "normed", "head": "logits"}, tracer_kwargs=LEAF
    )
    with torch.no_grad():
        out = extractor(x)
        torch.testing.assert_close(out["tokens"], block_tokens(model, x, [-1])[0], atol=0, rtol=0)
        torch.testing.assert_close(out["normed"], model.forward_features(x), atol=0, rtol=0)
        torch.testing.assert_close(out["logits"], model(x), atol=0, rtol=0)


def test_torchvision_without_leaf_modules_calls_the_stack_as_one_function(builtin_plugins):
    model = small("vit-tiny-rev").eval()
    _, eval_nodes = get_graph_node_names(model)  # a tracer that would trace into the stack
    assert "run_blocks" in eval_nodes and not [node for node in eval_nodes if node.startswith("blocks")]
    extractor = create_feature_extractor(model, {"run_blocks": "tokens", "head": "logits"})
    x = images()
    with torch.no_grad():
        out = extractor(x)
        torch.testing.assert_close(out["tokens"], block_tokens(model, x, [-1])[0], atol=0, rtol=0)
        torch.testing.assert_close(out["logits"], model(x), atol=0, rtol=0)


def test_tapped_block_outputs_reach_forward_hooks_and_fx(builtin_plugins):
    model = small("vit-tiny-rev").eval()
    x = images()
    seen = {}
    for index, module in enumerate(model.block_outputs):
        module.register_forward_hook(lambda module, args, out, index=index: seen.__setitem__(index, out))
    with torch.no_grad():
        logits = model(x)
        assert seen == {}  # untapped, forward runs the stack alone
        assert model.tap_blocks(2) == [1, 2]  # timm's indices: the last 2
        torch.testing.assert_close(model(x), logits, atol=0, rtol=0)
        assert sorted(seen) == [1, 2]
        for index, reference in zip([1, 2], block_tokens(model, x, [1, 2])):
            torch.testing.assert_close(seen[index], reference, atol=0, rtol=0)
        graph = create_feature_extractor(model, ["block_outputs.1", "head"], tracer_kwargs=LEAF)
        out = graph(x)
        torch.testing.assert_close(out["block_outputs.1"], seen[1], atol=0, rtol=0)
        torch.testing.assert_close(out["head"], logits, atol=0, rtol=0)
    with pytest.raises(IndexError, match="out of range"):
        model.tap_blocks([3])
    model.prune_intermediate_layers([1], prune_head=False)
    assert model.tapped == (1,)
    assert model.tap_blocks([]) == [] and model.tapped == ()


@pytest.mark.parametrize("feature_cls", ["hook", "fx"])
def test_training_through_hook_and_fx_features_invert_equals_autograd(builtin_plugins, feature_cls):
    runs = {}
    for execution in ("invert", "autograd"):
        torch.manual_seed(0)
        features = timm.create_model("vit-tiny-rev", features_only=True, feature_cls=feature_cls, out_indices=(0, 1),
                                     **SMALL).double().train()
        revzoo.set_execution(features, execution)
        sum(feature.square().sum() for feature in features(images())).backward()
        runs[execution] = grads(features)
    block_params = {key for key in runs["autograd"] if ".blocks.0." in key or ".blocks.1." in key}
    assert block_params and runs["invert"].keys() == runs["autograd"].keys()
    for key in runs["autograd"]:
        torch.testing.assert_close(runs["invert"][key], runs["autograd"][key], atol=1e-10, rtol=0, msg=key)
