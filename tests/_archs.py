"""Tiny randomly initialised models of many Hugging Face architectures, built offline.

``CAUSAL_ARCHS`` are decoder-only causal LMs (``AutoModelForCausalLM``) that the decode engine must
handle: plain attention, sliding-window and hybrid sliding/global attention, soft-capping, MoE, MLA,
tied embeddings, state-space (Mamba-family) and attention+state-space hybrids. ``REJECT_ARCHS`` are
models the engine has to reject before any work (or make work): a recurrent model that keeps its state
in its modules (RecurrentGemma), an RNN that keeps its state outside ``Cache`` (RWKV), an
encoder-decoder (T5) and a masked LM (BERT). What they taught the engine: docs/design.md#engine.
``ARCHS`` is both, in that order.

Every model has 2 layers and hidden size 32 (``_tiny.HIDDEN``), the vocabulary of ``_tiny.tokenizer()``
(pad 0, eos 1) and is in eval mode. The output head is redrawn from ``N(0, 0.3^2)`` so its logits spread
over a few units, as in ``_tiny.model``; a model whose head is tied to its input embeddings stays tied
(the shared matrix is redrawn). The 4 architectures of ``_tiny.ARCHES`` are ``_tiny.model`` itself
(identical weights, and its head untied as there).
"""
from __future__ import annotations

import functools

import torch

import _tiny

H = _tiny.HIDDEN
_COMMON = dict(vocab_size=_tiny.VOCAB_SIZE, pad_token_id=0, eos_token_id=1, bos_token_id=None)
# shared shape of the llama-like decoders: 4 query heads of 8, 2 key/value heads
_LLAMA_LIKE = dict(hidden_size=H, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=256)
# 4 is shorter than the longest prompt (6 words), so the sliding-window layers really slide
WINDOW = 4
# Mamba-2 style mixers: 2 * 32 inner channels in 4 heads of 16, one group, 8-dim state, 8-token chunks
_MAMBA2_LIKE = dict(mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=1, mamba_d_state=8, mamba_d_conv=4,
                    mamba_expand=2, mamba_chunk_size=8)


def _llama_like(name: str, **extra):
    import transformers as T

    return getattr(T, name)(**{**_LLAMA_LIKE, **_COMMON, **extra})


def _configs():
    """``{arch: zero-argument config builder}``; a builder, so that an architecture this transformers
    lacks fails only when that architecture is asked for."""
    import transformers as T

    moe = dict(num_experts=4, num_experts_per_tok=2)
    return {
        # plain attention
        "llama": lambda: _tiny.config("llama"),
        "llama_tied": lambda: _llama_like("LlamaConfig", tie_word_embeddings=True),
        "qwen2": lambda: _tiny.config("qwen2"),
        "qwen3": lambda: _llama_like("Qwen3Config", head_dim=8),
        "gemma": lambda: _llama_like("GemmaConfig", head_dim=8),
        "phi3": lambda: _llama_like("Phi3Config"),
        "olmo": lambda: _llama_like("OlmoConfig"),
        "olmo2": lambda: _llama_like("Olmo2Config"),
        "granite": lambda: _llama_like("GraniteConfig"),
        "cohere": lambda: _llama_like("CohereConfig", logit_scale=1.0),  # default 0.0625 flattens logits
        "stablelm": lambda: _llama_like("StableLmConfig"),
        "starcoder2": lambda: _llama_like("Starcoder2Config", sliding_window=None),
        "phi": lambda: T.PhiConfig(hidden_size=H, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   max_position_embeddings=256, **_COMMON),
        "gpt2": lambda: _tiny.config("gpt2"),
        "gpt_bigcode": lambda: T.GPTBigCodeConfig(n_embd=H, n_layer=2, n_head=4, n_positions=256, **_COMMON),
        "gpt_neox": lambda: T.GPTNeoXConfig(hidden_size=H, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, max_position_embeddings=256, **_COMMON),
        "opt": lambda: T.OPTConfig(hidden_size=H, ffn_dim=64, word_embed_proj_dim=H, num_hidden_layers=2,
                                   num_attention_heads=4, max_position_embeddings=256, **_COMMON),
        "falcon": lambda: T.FalconConfig(hidden_size=H, num_hidden_layers=2, num_attention_heads=4,
                                         new_decoder_architecture=False, multi_query=True, **_COMMON),
        "gptj": lambda: T.GPTJConfig(n_embd=H, n_layer=2, n_head=4, rotary_dim=4, n_positions=256, **_COMMON),
        "codegen": lambda: T.CodeGenConfig(n_embd=H, n_layer=2, n_head=4, rotary_dim=4, n_positions=256,
                                           n_ctx=256, **_COMMON),
        "bloom": lambda: T.BloomConfig(hidden_size=H, n_layer=2, n_head=4, **_COMMON),
        # sliding window / hybrid sliding+global, soft-capping
        "mistral": lambda: _llama_like("MistralConfig", sliding_window=WINDOW),
        "gemma2": lambda: _tiny.config("gemma2"),
        "gemma3": lambda: T.Gemma3TextConfig(**{**_LLAMA_LIKE, **_COMMON}, head_dim=8, sliding_window=WINDOW,
                                             layer_types=["sliding_attention", "full_attention"],
                                             final_logit_softcapping=3.0),
        # mixture of experts (gpt_oss also alternates sliding/full attention and has attention sinks)
        "mixtral": lambda: _llama_like("MixtralConfig", num_local_experts=4, num_experts_per_tok=2),
        "qwen2_moe": lambda: _llama_like("Qwen2MoeConfig", moe_intermediate_size=32,
                                         shared_expert_intermediate_size=32, **moe),
        "qwen3_moe": lambda: _llama_like("Qwen3MoeConfig", head_dim=8, moe_intermediate_size=32, **moe),
        "olmoe": lambda: _llama_like("OlmoeConfig", **moe),
        "deepseek_v3": lambda: _llama_like("DeepseekV3Config", num_key_value_heads=4, moe_intermediate_size=32,
                                           n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
                                           n_group=1, topk_group=1, first_k_dense_replace=1, kv_lora_rank=16,
                                           q_lora_rank=None, qk_rope_head_dim=4, qk_nope_head_dim=4,
                                           v_head_dim=8),
        "gpt_oss": lambda: _llama_like("GptOssConfig", head_dim=8, num_local_experts=4, num_experts_per_tok=2,
                                       sliding_window=WINDOW, rope_parameters={"rope_type": "default",
                                                                               "rope_theta": 10000.0}),
        # state-space models
        "mamba": lambda: T.MambaConfig(hidden_size=H, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4,
                                       time_step_rank=4, **_COMMON),
        "falcon_mamba": lambda: T.FalconMambaConfig(hidden_size=H, state_size=8, num_hidden_layers=2, expand=2,
                                                    conv_kernel=4, time_step_rank=4, **_COMMON),
        "mamba2": lambda: T.Mamba2Config(hidden_size=H, num_heads=4, head_dim=16, n_groups=1, state_size=8,
                                         num_hidden_layers=2, expand=2, conv_kernel=4, chunk_size=8, **_COMMON),
        # attention + state-space / linear-attention / convolution hybrids
        "jamba": lambda: T.JambaConfig(**{**_LLAMA_LIKE, **_COMMON}, attn_layer_period=2, attn_layer_offset=1,
                                       expert_layer_period=2, expert_layer_offset=1, num_experts=2,
                                       num_experts_per_tok=1, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2,
                                       mamba_dt_rank=4),
        "bamba": lambda: T.BambaConfig(**{**_LLAMA_LIKE, **_COMMON, **_MAMBA2_LIKE}, attn_layer_indices=[1]),
        "granitemoehybrid": lambda: T.GraniteMoeHybridConfig(
            **{**_LLAMA_LIKE, **_COMMON, **_MAMBA2_LIKE}, layer_types=["mamba", "attention"],
            num_local_experts=2, num_experts_per_tok=1, shared_intermediate_size=32),
        "zamba2": lambda: T.Zamba2Config(hidden_size=H, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                                         layers_block_type=["mamba", "hybrid"], mamba_d_state=8, mamba_d_conv=4,
                                         mamba_expand=2, mamba_ngroups=1, n_mamba_heads=4, chunk_size=8,
                                         adapter_rank=8, **_COMMON),
        "falcon_h1": lambda: T.FalconH1Config(**{**_LLAMA_LIKE, **_COMMON, **_MAMBA2_LIKE}, mamba_d_ssm=64),
        "lfm2": lambda: _llama_like("Lfm2Config", layer_types=["conv", "full_attention"], conv_L_cache=3),
        "qwen3_next": lambda: _llama_like("Qwen3NextConfig", head_dim=8, layer_types=["linear_attention",
                                          "full_attention"], linear_conv_kernel_dim=4, linear_key_head_dim=8,
                                          linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4,
                                          moe_intermediate_size=32, shared_expert_intermediate_size=32, **moe),
        # to be rejected (or made to work): own-cache recurrent, external-state RNN, seq2seq, masked LM
        "recurrent_gemma": lambda: T.RecurrentGemmaConfig(
            hidden_size=H, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
            lru_width=H, attention_window_size=WINDOW, block_types=["recurrent", "attention"], **_COMMON),
        "rwkv": lambda: T.RwkvConfig(hidden_size=H, attention_hidden_size=H, intermediate_size=64,
                                     num_hidden_layers=2, context_length=256, **_COMMON),
        "t5": lambda: T.T5Config(d_model=H, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0,
                                 **_COMMON),
        "bert": lambda: T.BertConfig(hidden_size=H, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     max_position_embeddings=256, **_COMMON),
    }


REJECT_ARCHS = ("recurrent_gemma", "rwkv", "t5", "bert")
ARCHS = tuple(_configs())
CAUSAL_ARCHS = tuple(a for a in ARCHS if a not in REJECT_ARCHS)
STATE_SPACE_ARCHS = ("mamba", "falcon_mamba", "mamba2")
HYBRID_ARCHS = ("jamba", "bamba", "granitemoehybrid", "zamba2", "falcon_h1", "lfm2", "qwen3_next")


def config(name: str):
    """The config of the tiny ``name`` (a fresh object per call)."""
    builders = _configs()
    if name not in builders:
        raise ValueError(f"unknown tiny arch {name!r}; expected one of {', '.join(builders)}")
    return builders[name]()


def _auto_class(name: str):
    import transformers as T

    if name == "t5":
        return T.AutoModelForSeq2SeqLM
    if name == "bert":
        return T.AutoModelForMaskedLM
    return T.AutoModelForCausalLM


@functools.lru_cache(maxsize=None)
def model(name: str = "llama", seed: int = 0):
    """A tiny random model of ``name`` in eval mode (cached: do not modify it in a test).

    Seeded with ``torch.manual_seed(seed)``; eager attention; generation config (where the model can
    generate) eos 1, pad 0.
    """
    if name in _tiny.ARCHES:
        return _tiny.model(name, seed)
    torch.manual_seed(seed)
    m = _auto_class(name).from_config(config(name), attn_implementation="eager")
    with torch.no_grad():
        m.get_output_embeddings().weight.normal_(0.0, 0.3)  # a tied head stays tied: same Parameter
    if m.can_generate():
        m.generation_config.eos_token_id = 1
        m.generation_config.pad_token_id = 0
    return m.eval()


def is_tied(m) -> bool:
    """Whether ``m``'s output head shares its weight with the input embeddings."""
    return m.get_output_embeddings().weight is m.get_input_embeddings().weight
