"""The decode engine shared by AISP, SEA and Best-of-N: the model's output head and the hook that
perturbs its input, and the batched decode loop with the KV cache (docs/design.md#engine).

Modules: :mod:`.model` (what the engine knows about a model, the head hook, a forward's arguments),
:mod:`.cache` (prefill, fork), :mod:`.decoding` (the decode loop), :mod:`.compiled` (the compiled step),
and what turns text into a batch and back: :mod:`.encoding` (prompts, chat template, response texts),
:mod:`.sampling` (per-prompt seeds, token sampling on the stream), :mod:`._context` (prompt vs context).
The names below are re-exported here; use them as ``engine.decode`` and so on.

* :func:`output_head` finds a causal LM's output projection (``model.get_output_embeddings()``);
  :func:`head_device` / :func:`input_device` say where the head and the input embeddings compute, also
  for a model spread over devices by accelerate (``from_pretrained(device_map=...)``), where a module's
  weights may sit on ``"meta"`` (offloaded) and be loaded for each forward.
* :func:`perturb_head_input` edits the head's *input* (the final normalised hidden state, the
  "pre-logits") with a forward-pre-hook, so logits still come from the model's own forward and keep
  its post-processing (e.g. Gemma-2's final logit soft-capping). The KV cache is never touched.
* :func:`decode` is the batched decode loop with the KV cache: greedy or any token chooser, stops each
  rollout at EOS, records lengths (and optionally the logits of every step).
"""

from fastalign.engine.cache import PromptCache, fork_cache, position_ids, prefill, prompt_head_norm, refork_in_place
from fastalign.engine.compiled import CompiledStep
from fastalign.engine.decoding import Rollouts, decode
from fastalign.engine.model import (CACHE_KWARGS, ModelInterface, eval_mode, forward_kwargs, head_device, input_device,
                                    input_embedding, model_interface, module_device, output_head, perturb_head_input)

__all__ = [
    "CACHE_KWARGS",
    "CompiledStep",
    "ModelInterface",
    "PromptCache",
    "Rollouts",
    "decode",
    "eval_mode",
    "fork_cache",
    "forward_kwargs",
    "head_device",
    "input_device",
    "input_embedding",
    "model_interface",
    "module_device",
    "output_head",
    "perturb_head_input",
    "position_ids",
    "prefill",
    "prompt_head_norm",
    "refork_in_place",
]
