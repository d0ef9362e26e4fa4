"""Tiny seeded models of every supported family, built from their config classes (no downloads)."""

from __future__ import annotations

import torch
import transformers

VOCAB = 96
COMMON = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
          "num_attention_heads": 4, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
DECODER = {**COMMON, "num_key_value_heads": 2, "max_position_embeddings": 64}

# model_type -> (config class, model class, config options with dropout where the family has it)
FAMILIES = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", {"vocab_size": VOCAB, "n_embd": 32, "n_layer": 3, "n_head": 4,
                                               "n_positions": 64, "bos_token_id": 1, "eos_token_id": 2,
                                               "resid_pdrop": 0.1, "attn_pdrop": 0.1, "embd_pdrop": 0.0}),
    "llama": ("LlamaConfig", "LlamaForCausalLM", {**DECODER, "attention_dropout": 0.1}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {**DECODER, "attention_dropout": 0.1}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {**DECODER, "head_dim": 8, "attention_dropout": 0.1}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {**DECODER, "attention_dropout": 0.1}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {**DECODER, "resid_pdrop": 0.1, "attention_dropout": 0.1}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {**DECODER, "head_dim": 8, "sliding_window": 8,
                                                     "attention_dropout": 0.1}),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", {**DECODER, "head_dim": 8, "sliding_window": 8,
                                                              "attention_dropout": 0.1}),
    "opt": ("OPTConfig", "OPTForCausalLM", {**COMMON, "ffn_dim": 64, "max_position_embeddings": 64,
                                            "word_embed_proj_dim": 32, "dropout": 0.1, "bos_token_id": 2}),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {**COMMON, "max_position_embeddings": 64,
                                                         "hidden_dropout": 0.1, "attention_dropout": 0.1}),
    "bert": ("BertConfig", "BertForMaskedLM", {**COMMON, "max_position_embeddings": 64, "hidden_dropout_prob": 0.1,
                                               "attention_probs_dropout_prob": 0.1}),
    "roberta": ("RobertaConfig", "RobertaForMaskedLM", {**COMMON, "max_position_embeddings": 66, "pad_token_id": 1,
                                                        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}),
}
DECODERS = [name for name in FAMILIES if name not in ("bert", "roberta")]


def tiny(family: str, dtype: torch.dtype = torch.float64, dropout: bool = False, **options) -> transformers.PreTrainedModel:
    """Returns a seeded tiny model of `family` (3 layers, width 32), dropout set to 0 unless `dropout`."""
    config_class, model_class, settings = FAMILIES[family]
    settings = {**settings, **options}
    if not dropout:
        settings = {key: 0.0 if "drop" in key else value for key, value in settings.items()}
    config = getattr(transformers, config_class)(**settings)
    torch.manual_seed(0)
    return getattr(transformers, model_class)(config).to(dtype)


def tokens(batch: int = 2, length: int = 12, seed: int = 0) -> torch.Tensor:
    """Returns seeded token ids in 3 ... VOCAB - 1 (clear of the special ids)."""
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
