"""The paper's RevViT (revvit-*): SlowFast's and mmpretrain's weights give their logits; forms, gradients, conversion."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import revzoo_vit
import torch
from revzoo_vit import PaperRevViT, read_mmpretrain_revvit
from revzoo_vit.branches import AttentionBranch, MlpBranch
from safetensors.torch import load_file

import revzoo
from revzoo.bench import benchable_architectures
from revzoo.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "revvit"  # tools/fixtures/make_revvit_fixtures.py wrote them
# What the fixtures are (SlowFast's file carries its cfg; mmpretrain's does not say its head count).
REFERENCES = {
    "slowfast-revvit": ("slowfast_revvit.pth", {}),
    "mmpretrain-revvit": ("mmpretrain_revvit.pth", {"num_heads": 2}),
}
# float32 logits of order 1, made on another CPU: a few rounding steps of float32 (eps 1.2e-7) through 3 blocks
TOLERANCE = 1e-5
TINY = dict(img_size=16, patch_size=8, embed_dim=16, num_heads=2, num_classes=3)


@pytest.fixture
def vit_plugin(register_plugin):
    register_plugin(revzoo_vit, name="vit")


def reference(fmt: str) -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / REFERENCES[fmt][0].replace(".pth", "_reference.safetensors"))


def foreign(fmt: str) -> dict:
    return torch.load(FIXTURES / REFERENCES[fmt][0], weights_only=True)


def imported(fmt: str, tmp_path: Path) -> PaperRevViT:
    name, options = REFERENCES[fmt]
    path = revzoo.import_checkpoint(fmt, FIXTURES / name, tmp_path / f"{fmt}.safetensors", **options)
    return revzoo.load(path).eval()


@pytest.mark.parametrize("fmt", sorted(REFERENCES))
def test_imported_weights_give_the_reference_implementations_logits(vit_plugin, tmp_path, fmt):
    model = imported(fmt, tmp_path)
    assert isinstance(model, PaperRevViT) and revzoo.get_form(model) == "reversible"
    sizes = {"embed_dim": 32, "depth": 3, "num_heads": 2, "num_classes": 5, "img_size": 32, "patch_size": 8}
    assert {key: model.revzoo_config[key] for key in sizes} == sizes  # read from the tensors (SlowFast: and its cfg)
    expected = reference(fmt)
    with torch.no_grad():
        logits = model(expected["images"])
    torch.testing.assert_close(logits, expected["logits"], atol=TOLERANCE, rtol=0)
    # the reference's function, not a near one: the sequential form of the same weights is far from it
    with torch.no_grad():
        assert (revzoo.set_form(model, "sequential")(expected["images"]) - expected["logits"]).abs().max() > 1e-2


def test_import_from_the_command_line_with_slowfasts_optimizer_state_beside(vit_plugin, tmp_path, capsys):
    src, out = tmp_path / "REV_VIT_S.pyth", tmp_path / "rev.safetensors"  # the name SlowFast publishes it under
    saved = foreign("slowfast-revvit")  # as SlowFast's save_checkpoint writes it: the optimizer state too
    saved["optimizer_state"] = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(32)}},
                                "param_groups": [{"lr": 5e-4, "params": [0]}]}
    torch.save(saved, src)
    assert main(["import", "slowfast-revvit", str(src), str(out)]) in (0, None)
    assert f"wrote {out}" in capsys.readouterr().out
    assert revzoo.read_metadata(out)["architecture"] == "revvit-small"
    expected = reference("slowfast-revvit")
    with torch.no_grad():
        logits = revzoo.load(out).eval()(expected["images"])
    torch.testing.assert_close(logits, expected["logits"], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("fmt", sorted(REFERENCES))
def test_export_gives_back_the_foreign_tensors(vit_plugin, tmp_path, fmt):
    path = revzoo.import_checkpoint(fmt, FIXTURES / REFERENCES[fmt][0], tmp_path / "m.safetensors",
                                    **REFERENCES[fmt][1])
    out = revzoo.export_checkpoint(fmt, path, tmp_path / "back.pth")
    exported = torch.load(out, weights_only=True)
    original = foreign(fmt)
    if fmt == "slowfast-revvit":
        exported, original = exported["model_state"], original["model_state"]
    else:
        original = original["state_dict"]
    assert sorted(exported) == sorted(original)
    for key, tensor in original.items():
        assert torch.equal(exported[key], tensor), key


def _branch_outputs(model: PaperRevViT, images: torch.Tensor, paper: bool) -> torch.Tensor:
    """The model's function written out: the paper's coupling (`paper`) or the plain ViT, then its head."""
    x = model.patch_embed(images) + model.pos_embed
    x1 = x2 = x
    for block in model.blocks.blocks:
        if paper:
            x1 = x1 + AttentionBranch.forward(block.f, x2)
            x2 = x2 + MlpBranch.forward(block.g, x1)
        else:
            x1 = x1 + AttentionBranch.forward(block.f, x1)
            x1 = x2 = x1 + MlpBranch.forward(block.g, x1)
    return model.head(model.norm(torch.cat([x1, x2], dim=-1)).mean(dim=1))


@pytest.mark.parametrize("depth", [2, 3])
def test_both_forms_are_the_functions_they_say(vit_plugin, depth):
    torch.manual_seed(0)
    model = revzoo.create("revvit-tiny-rev", **TINY, depth=depth).double().eval()
    images = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(images), _branch_outputs(model, images, paper=True), atol=1e-12, rtol=0)
        revzoo.set_form(model, "sequential")
        torch.testing.assert_close(model(images), _branch_outputs(model, images, paper=False), atol=1e-12, rtol=0)
    # and with gradients on, through the stack's training paths
    for form in ("reversible", "sequential"):
        revzoo.set_form(model, form)
        torch.testing.assert_close(model(images), _branch_outputs(model, images, form == "reversible"),
                                   atol=1e-12, rtol=0)


def _gradients(model: torch.nn.Module, images: torch.Tensor, execution: str) -> dict[str, torch.Tensor]:
    revzoo.set_execution(model, execution)
    model.zero_grad(set_to_none=True)
    images.grad = None
    torch.manual_seed(7)  # the same dropout and drop-path masks in both runs
    logits = model(images)
    (logits * torch.linspace(-1, 1, logits.shape[-1], dtype=logits.dtype)).sum().backward()
    grads = {name: parameter.grad.clone() for name, parameter in model.named_parameters()}
    grads["<images>"] = images.grad.clone()
    return grads


@pytest.mark.parametrize("depth", [2, 3])
def test_invert_gradients_equal_autograd_tensor_by_tensor(vit_plugin, depth):
    torch.manual_seed(0)
    model = revzoo.create("revvit-tiny-rev", **TINY, depth=depth, drop_path_rate=0.4, drop_rate=0.2,
                          attn_drop_rate=0.2, proj_drop_rate=0.2).double().train()
    images = torch.randn(8, 3, 16, 16, dtype=torch.float64, requires_grad=True)  # drop path keeps some of each block
    reference_grads = _gradients(model, images, "autograd")
    inverted = _gradients(model, images, "invert")
    assert inverted.keys() == reference_grads.keys()
    for name, grad in reference_grads.items():
        assert grad.abs().sum() > 0, f"{name}: zero gradient, the comparison would prove nothing"
        torch.testing.assert_close(inverted[name], grad, atol=1e-10, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    # inputs that do not require grad
    report = revzoo.check_reversible(model, images.detach())
    assert report.max_grad_diff < 1e-10, str(report)


def test_exact_arithmetic_inverts_bitwise(vit_plugin):
    torch.manual_seed(1)
    model = revzoo.create("revvit-tiny-rev", **TINY, depth=3, drop_path_rate=0.2)
    model.exact = True
    report = revzoo.check_reversible(model, torch.randn(2, 3, 16, 16))
    assert report.bitwise and report.max_grad_diff == 0, str(report)


def test_convert_between_forms_keeps_every_tensor(vit_plugin, tmp_path):
    model = imported("slowfast-revvit", tmp_path)
    images = reference("slowfast-revvit")["images"]
    src = tmp_path / "slowfast-revvit.safetensors"
    seq = revzoo.convert(src, tmp_path / "seq.safetensors", "sequential")
    sequential = revzoo.load(seq).eval()
    assert revzoo.get_form(sequential) == "sequential"
    assert all(torch.equal(sequential.state_dict()[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        torch.testing.assert_close(sequential(images), _branch_outputs(sequential, images, paper=False),
                                   atol=1e-5, rtol=0)
        back = revzoo.load(revzoo.convert(seq, tmp_path / "rev.safetensors", "reversible")).eval()
        assert torch.equal(back(images), model(images))


def test_reversibilize_keeps_the_sequential_function_closer_as_the_scale_shrinks(vit_plugin):
    changes = []
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for scale in (0.5, 2.0**-3, 2.0**-6):
        torch.manual_seed(0)
        model = revzoo.create("revvit-tiny", **TINY, depth=3).eval()
        with torch.no_grad():
            before = model(images)
            revzoo.reversibilize(model, scale=scale, adapter_dim=4)
            assert model.form == "reversible" and model.exact
            changes.append(((model(images) - before).abs().max() / before.abs().max()).item())
    assert changes[2] < changes[1] < changes[0] and changes[2] < 1e-3, changes
    for block in model.blocks.blocks:
        torch.nn.init.normal_(block.adapter.up.weight, std=0.1)  # a fine-tuned adapter, not zero
    report = revzoo.check_reversible(model, images)
    assert report.bitwise and report.max_grad_diff == 0, str(report)
    revzoo.set_form(model, "sequential")  # the adapters are unused there: the original function
    with torch.no_grad():
        torch.testing.assert_close(model(images), before, atol=0, rtol=0)


def test_names_aliases_bench_and_example_inputs(vit_plugin):
    assert {"revvit-tiny", "revvit-small-rev", "revvit-base-rev"} <= set(revzoo.list_models("revvit*"))
    assert revzoo.get_architecture("revvit-s").name == "revvit-small"
    assert revzoo.get_architecture("revvit-b-rev").name == "revvit-base"
    assert {"revvit-tiny", "revvit-small", "revvit-base"} <= set(benchable_architectures())
    spec = revzoo.get_architecture("revvit-small")
    model = revzoo.create("revvit-small-rev", **{**spec.small, "depth": 2})
    assert model.embed_dim == 384 and model.norm.normalized_shape == (768,) and model.head.in_features == 768
    args, kwargs = spec.example_inputs(model, torch.Generator().manual_seed(0))
    assert model(*args, **kwargs).shape == (4, 1000)


def test_a_few_training_steps(vit_plugin):
    torch.manual_seed(0)
    model = revzoo.create("revvit-tiny-rev", **TINY, depth=3, drop_path_rate=0.1).train()
    images, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 3, (8,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    model.reset_classifier(7)
    assert model(images).shape == (8, 7) and model.revzoo_config["num_classes"] == 7


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(embed_dim=30, num_heads=4), "not a multiple of num_heads"),
        (dict(depth=-1), "depth must be an integer >= 0"),
        (dict(img_size=4, patch_size=8), "smaller than patch_size"),
        (dict(drop_path_rate=1.0), r"drop_path_rate must be a number in \[0, 1\)"),
    ],
)
def test_bad_sizes_are_config_errors(vit_plugin, options, message):
    with pytest.raises(revzoo.ConfigError, match=message):
        revzoo.create("revvit-tiny", **{**TINY, **options})


def _state(fmt: str) -> dict[str, torch.Tensor]:
    obj = foreign(fmt)
    return dict(obj["model_state"] if fmt == "slowfast-revvit" else obj["state_dict"])


def test_bad_checkpoints_are_clear_checkpoint_errors():
    slowfast, mmpretrain = _state("slowfast-revvit"), _state("mmpretrain-revvit")  # bare state dicts: no cfg
    read_slowfast_revvit = functools.partial(revzoo_vit.read_slowfast_revvit, num_heads=2)
    cases = [
        (read_slowfast_revvit, mmpretrain, r"has no place for: 43 \(backbone.*they are mmpretrain-revvit's names"),
        (read_mmpretrain_revvit, slowfast, "has no place for.*they are slowfast-revvit's names"),
        (read_slowfast_revvit, {**slowfast, "norm.weight": torch.ones(63)}, r"shapes do not fit .*norm.weight \(63,\)"),
        (read_slowfast_revvit, {k: v for k, v in slowfast.items() if "layers.1.G.mlp.fc2" not in k},
         "missing 2 .*blocks.blocks.1.g.mlp.fc2"),
        (read_slowfast_revvit, {k: v for k, v in slowfast.items() if "layers.2.F.attn.k." not in k},
         "block 2 has attn \\['q', 'v'\\]"),
        (read_slowfast_revvit, {k: v for k, v in slowfast.items() if not k.startswith("rev_backbone.layers.1.")},
         r"block indices must run 0..depth-1, found \[0, 2\]"),
        (read_mmpretrain_revvit, mmpretrain, "pass it \\(--option num_heads=N\\)"),
        (read_mmpretrain_revvit, {**mmpretrain, "backbone.cls_token": torch.zeros(1, 1, 32)}, "class token"),
        (read_slowfast_revvit, {"model_state": {"pos_embed": torch.zeros(1, 16, 32), "epoch": 3}}, "not tensors"),
        (read_slowfast_revvit, [1, 2], "state dict of tensors, got list"),
        (read_slowfast_revvit, {"pos_embed": torch.zeros(1, 15, 32), "patch_embed.proj.weight": torch.zeros(32, 3, 8, 8)},
         "not a square grid"),
    ]
    for read, obj, message in cases:
        with pytest.raises(revzoo.CheckpointError, match=message):
            read(obj)
    with pytest.raises(revzoo.CheckpointError, match="embed_dim 32 is not a multiple of num_heads 3"):
        read_mmpretrain_revvit(mmpretrain, num_heads=3)
    with pytest.raises(revzoo.CheckpointError, match="takes no option\\(s\\) heads; valid: num_heads"):
        read_slowfast_revvit(slowfast, heads=2)
    # SlowFast's own file says its head count in its cfg; a bare state dict of width 32 cannot
    with pytest.raises(revzoo.CheckpointError, match="--option num_heads=N"):
        revzoo_vit.read_slowfast_revvit(slowfast)
    assert revzoo_vit.read_slowfast_revvit(foreign("slowfast-revvit")).config["num_heads"] == 2
    with pytest.raises(revzoo.CheckpointError, match="for img_size 32, not 224"):
        read_slowfast_revvit(slowfast, img_size=224)


def test_a_wrong_checkpoint_on_the_command_line_is_one_line(vit_plugin, tmp_path, capsys):
    code = main(["import", "mmpretrain-revvit", str(FIXTURES / "slowfast_revvit.pth"), str(tmp_path / "out.safetensors")])
    err = capsys.readouterr().err
    assert code != 0 and "a slowfast-revvit checkpoint (its weights under 'model_state')" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.safetensors").exists()
    with pytest.raises(revzoo.CheckpointError, match="paper's RevViT"):
        revzoo_vit.write_slowfast_revvit(torch.nn.Linear(2, 2))
