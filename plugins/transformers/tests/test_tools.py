"""The tools transformers users train with, on a reversibilized model: Trainer, PEFT, autocast, checkpointing."""

from __future__ import annotations

import warnings

import pytest
import torch
from tiny import FAMILIES, tiny, tokens

import revzoo

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _lora_grads(model, execution: str, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    revzoo.set_execution(model, execution)
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_peft_lora_on_a_frozen_reversibilized_base_trains_with_invert_equal_to_autograd():
    from peft import LoraConfig, get_peft_model

    base = revzoo.reversibilize(tiny("llama"))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    with torch.no_grad():  # LoRA's B starts at zero: give it values so every LoRA weight has a gradient
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    model.train()
    ids = tokens()
    autograd = _lora_grads(model, "autograd", ids)
    invert = _lora_grads(model, "invert", ids)
    assert autograd.keys() == invert.keys() and autograd and all("lora_" in name for name in invert)
    assert len(invert) == 2 * 2 * 3  # A and B of q_proj and v_proj in each of the 3 layers
    for name, grad in autograd.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(invert[name], grad, rtol=0, atol=0, msg=name)


def test_trainer_trains_and_resumes_from_its_own_checkpoint(tmp_path):
    from transformers import Trainer, TrainingArguments

    rows = [{"input_ids": row, "labels": row} for row in tokens(batch=8, length=12, seed=2)]

    def trainer(steps: int, output: str) -> Trainer:
        model = revzoo.reversibilize(tiny("gpt2", dtype=torch.float32))
        arguments = TrainingArguments(output_dir=str(tmp_path / output), max_steps=steps, per_device_train_batch_size=2,
                                      learning_rate=1e-2, save_steps=2, report_to=[], use_cpu=True, seed=0,
                                      logging_steps=1, dataloader_num_workers=0, lr_scheduler_type="constant",
                                      disable_tqdm=True)
        return Trainer(model=model, args=arguments, train_dataset=rows)

    straight = trainer(4, "straight")
    straight.train()
    interrupted = trainer(2, "resumed")
    interrupted.train()
    resumed = trainer(4, "resumed")
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-2"))
    assert resumed.state.global_step == 4
    losses = [entry["loss"] for entry in resumed.state.log_history if "loss" in entry]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    for (name, want), got in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(got, want), name  # the same run, interrupted (a constant schedule: the short run's is its own)
    assert any(".adapter." in name for name in resumed.model.state_dict())


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_autocast_invert_equals_autograd(family):
    model = revzoo.reversibilize(tiny(family, dtype=torch.float32)).train()
    ids = tokens()

    def grads(execution: str) -> dict[str, torch.Tensor]:
        revzoo.set_execution(model, execution)
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):  # no cache in either (see test_families)
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    autograd, invert = grads("autograd"), grads("invert")
    assert autograd.keys() == invert.keys()
    for name, grad in autograd.items():
        torch.testing.assert_close(invert[name], grad, rtol=0, atol=0, msg=name)  # exact: the same bf16 ops


@pytest.mark.parametrize("enable", ["gradient_checkpointing_enable", "activation_checkpointing_enable"])
def test_gradient_checkpointing_on_a_reversible_model_warns_and_keeps_the_gradients(enable):
    model = revzoo.reversibilize(tiny("mistral")).train()
    if not hasattr(model, enable):
        pytest.skip(f"this transformers has no {enable}")  # activation_checkpointing_enable: the 5.x name
    ids = tokens()
    revzoo.set_execution(model, "autograd")
    model(input_ids=ids, labels=ids).loss.backward()
    reference = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    revzoo.set_execution(model, "invert")
    disable = "activation_checkpointing_disable" if hasattr(model, "activation_checkpointing_disable") else \
        "gradient_checkpointing_disable"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5's deprecation of the gradient_ name
        getattr(model, enable)({"use_reentrant": False})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(input_ids=ids, labels=ids).loss.backward()
    assert any("gradient checkpointing" in str(w.message) and f"model.{disable}()" in str(w.message) for w in caught)
    for name, grad in reference.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, rtol=0, atol=0, msg=name)


def test_check_reversible_on_a_transformers_model():
    model = revzoo.reversibilize(tiny("gpt_neox")).train()
    report = revzoo.check_reversible(model, tokens())
    assert len(report.blocks) == 3
    assert report.max_grad_diff < 1e-12 and all(block.bitwise for block in report.blocks)
