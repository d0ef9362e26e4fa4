"""Every supported transformers family, made reversible in place: class, keys, function and gradients kept."""

from __future__ import annotations

import warnings

import pytest
import torch
from tiny import DECODERS, FAMILIES, tiny, tokens

import revzoo

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _train_adapters(model: torch.nn.Module) -> None:
    """Gives the zero-initialised adapters values, as fine-tuning would, so their gradients are not trivial."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".adapter." in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.05)


def _grads(model: torch.nn.Module, execution: str, **inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    revzoo.set_execution(model, execution)
    model.zero_grad()
    torch.manual_seed(5)
    loss = model(**inputs).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", FAMILIES)
def test_conversion_keeps_class_keys_and_the_pretrained_function(family):
    model = tiny(family).eval()
    ids = tokens()
    reference = model(ids).logits
    keys = list(model.state_dict())
    converted = revzoo.reversibilize(model)
    assert converted is model and type(model).__name__ == FAMILIES[family][1]
    new_keys = [key for key in model.state_dict() if key not in keys]
    assert [key for key in model.state_dict() if key in keys] == keys
    assert new_keys and all(".adapter." in key for key in new_keys)
    assert revzoo.get_form(model) == "reversible"
    change = (model(ids).logits - reference).pow(2).mean().sqrt() / reference.pow(2).mean().sqrt()
    assert 0 < change <= 2e-2  # the chosen scale's promise, on its own example call
    revzoo.set_form(model, "sequential")
    assert torch.equal(model(ids).logits, reference)  # the model's own loop: bitwise


@pytest.mark.parametrize("dropout", [False, True], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("family", FAMILIES)
def test_invert_gradients_equal_autograd_with_padding(family, dropout):
    model = revzoo.reversibilize(tiny(family, dropout=dropout)).train()
    _train_adapters(model)
    ids = tokens()
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0  # right padding
    # use_cache=False for both: invert sets it itself, and a cache under autograd changes the layers' calls. GPT-2's
    # keys then are DynamicCache.update's torch.cat copies (contiguous), not strided views of c_attn's output, and
    # under attention dropout (math sdpa, or eager) the key's layout changes how d(query) = dS @ key rounds: about
    # an ulp from the last layer's c_attn down to the embeddings. The other families copy their keys anyway (rotary
    # embeddings, repeat_kv) or have no cache (bert, roberta) or no attention dropout here (opt).
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": ids, "use_cache": False}
    loss_autograd, autograd = _grads(model, "autograd", **inputs)
    loss_invert, invert = _grads(model, "invert", **inputs)
    assert torch.equal(loss_invert, loss_autograd)
    assert autograd.keys() == invert.keys()
    assert any(".adapter." in name for name in invert)
    for name, grad in autograd.items():
        torch.testing.assert_close(invert[name], grad, rtol=0, atol=0, msg=name)  # bitwise


def test_training_with_the_config_default_use_cache_warns_once_and_runs_without_a_cache():
    model = revzoo.reversibilize(tiny("llama")).train()
    assert model.config.use_cache
    ids = tokens()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            output = model(input_ids=ids, labels=ids)
            output.loss.backward()
    messages = [str(w.message) for w in caught if "use_cache" in str(w.message)]
    assert len(messages) == 1 and "use_cache=False" in messages[0]
    assert output.cache is None


def test_an_explicit_cache_under_invert_is_refused_naming_the_keyword():
    from transformers import DynamicCache

    model = revzoo.reversibilize(tiny("llama")).train()
    ids = tokens()
    with pytest.raises(TypeError, match="keyword 'calls' holds a DynamicCache"):
        model(input_ids=ids, labels=ids, cache=DynamicCache(config=model.config))


@pytest.mark.parametrize("option", ["output_hidden_states", "output_attentions"])
def test_per_layer_outputs_are_refused_in_the_reversible_form_and_given_in_the_sequential(option):
    model = revzoo.reversibilize(tiny("llama")).eval()
    ids = tokens()
    with pytest.raises(ValueError, match=f"{option} is not available in the reversible form"):
        model(ids, **{option: True})
    revzoo.set_form(model, "sequential")
    assert model(ids, **{option: True})[option.replace("output_", "")] is not None


@pytest.mark.parametrize("family", DECODERS)
def test_generate_with_the_cache_gives_the_tokens_without_it_before_and_after_a_step(family):
    model = revzoo.reversibilize(tiny(family, dtype=torch.float32))
    prompt = tokens(batch=1, length=5)
    options = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}

    def both() -> tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        return model.generate(prompt, use_cache=True, **options), model.generate(prompt, use_cache=False, **options)

    cached, uncached = both()
    assert torch.equal(cached, uncached) and cached.shape[1] == 13
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    ids = tokens(length=16, seed=3)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    cached_after, uncached_after = both()
    assert torch.equal(cached_after, uncached_after)
    assert not torch.equal(cached_after, cached)  # the step changed what it generates


def test_an_unsupported_family_is_refused_in_one_line_naming_the_supported():
    from transformers import GPTJConfig, GPTJForCausalLM

    model = GPTJForCausalLM(GPTJConfig(vocab_size=32, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=32))
    with pytest.raises(revzoo.ConfigError, match=r"model_type 'gptj'\); supported families: bert, gemma2, .*llama"):
        revzoo.reversibilize(model)
    assert not any(isinstance(m, revzoo.ReversibleSequence) for m in model.modules())


def test_a_plain_module_without_stacks_still_names_the_fix():
    with pytest.raises(revzoo.ConfigError, match="no adapter takes it"):
        revzoo.reversibilize(torch.nn.Linear(2, 2))


def test_save_and_load_round_trip_gives_the_same_logits(tmp_path):
    model = revzoo.reversibilize(tiny("gpt2")).eval()
    _train_adapters(model)
    ids = tokens()
    path = tmp_path / "nested" / "gpt2.safetensors"
    path.parent.mkdir()
    revzoo.save(model, path)
    loaded = revzoo.load(path).eval()
    assert type(loaded) is type(model) and revzoo.get_form(loaded) == "reversible"
    assert loaded.transformer.revzoo_stack.coupling == model.transformer.revzoo_stack.coupling
    assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_transformers_save_pretrained_gives_plain_transformers_the_sequential_model(tmp_path):
    from transformers import AutoModelForCausalLM

    model = revzoo.reversibilize(tiny("llama")).eval()
    _train_adapters(model)
    model.save_pretrained(tmp_path)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64).eval()  # the adapters are left out
    assert not any(isinstance(m, revzoo.ReversibleSequence) for m in plain.modules())
    revzoo.set_form(model, "sequential")
    ids = tokens()
    assert torch.equal(plain(ids).logits, model(ids).logits)


def test_create_builds_a_family_by_model_type():
    model = revzoo.create("transformers/llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
    assert type(model).__name__ == "LlamaForCausalLM" and revzoo.get_form(model) == "sequential"
    with pytest.raises(revzoo.ConfigError, match="model_type must be one of"):
        revzoo.create("transformers/t5")


def test_revzoo_save_pretrained_and_load_round_trip_into_new_folders(tmp_path):
    model = revzoo.reversibilize(tiny("qwen3")).eval()
    _train_adapters(model)
    directory = revzoo.save_pretrained(model, tmp_path / "runs" / "qwen3-rev")  # parents made, as transformers does
    loaded = revzoo.load(directory).eval()
    ids = tokens()
    assert type(loaded) is type(model) and torch.equal(loaded(ids).logits, model(ids).logits)


def test_the_layer_list_outside_the_models_forward_gives_the_layers_themselves():
    model = revzoo.reversibilize(tiny("llama"))
    layers = list(model.model.layers)
    assert [type(layer).__name__ for layer in layers] == ["LlamaDecoderLayer"] * 3  # FSDP wrapping, freezing recipes
    assert [type(layer).__name__ for layer in model.model.layers[:2]] == ["LlamaDecoderLayer"] * 2
    with pytest.raises(ValueError, match="output_hidden_states"):
        model(tokens(), output_hidden_states=True)
    assert type(next(iter(model.model.layers))).__name__ == "LlamaDecoderLayer"  # a refused call leaves no trace
    model.eval()
    assert model(tokens()).logits.isfinite().all()


def test_a_transformers_directory_loads_and_converts_preserving_from_the_command_line(tmp_path, capsys):
    from revzoo.cli import main

    original = tiny("llama").eval()
    original.save_pretrained(tmp_path / "llama")  # plain transformers: no revzoo metadata anywhere
    ids = tokens()
    loaded = revzoo.load(tmp_path / "llama").eval()
    assert type(loaded) is type(original) and revzoo.get_form(loaded) == "sequential"
    assert torch.equal(loaded(ids).logits, original(ids).logits)
    assert main(["convert", str(tmp_path / "llama"), str(tmp_path / "rev.safetensors"), "--to", "reversible",
                 "--preserve"]) == 0
    assert "(chosen for this model)" in capsys.readouterr().out
    converted = revzoo.load(tmp_path / "rev.safetensors").eval()
    assert type(converted) is type(original) and revzoo.get_form(converted) == "reversible"
    reference = original(ids).logits
    change = (converted(ids).logits - reference).pow(2).mean().sqrt() / reference.pow(2).mean().sqrt()
    assert 0 < change <= 2e-2
