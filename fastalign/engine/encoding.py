"""Prompts in, token ids out, and back: prompt checks, chat-template encoding with left padding, the
EOS and pad ids of a model/tokenizer pair, and response texts from generated ids."""
from __future__ import annotations

from typing import Sequence

import torch

from fastalign.errors import InputError, InputTypeError

__all__ = ["check_prompts", "prompt_token_ids", "left_pad", "encode_prompts", "truncate_prompt", "eos_token_ids", "pad_token_id", "response_texts"]


def check_prompts(prompts) -> list[str]:
    """``prompts`` as a non-empty list of strings (a single string is one prompt)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise InputError(f"prompts: expected a string or a non-empty list of strings, got {prompts!r}")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise InputTypeError(f"prompts[{i}]: expected a string, got {type(p).__name__}")
    return list(prompts)


def _uses_chat_template(tokenizer, chat_template: bool | None) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if chat_template is None:
        return has
    if chat_template and not has:
        raise InputError("chat_template: True needs a tokenizer with a chat template, this one has none")
    return bool(chat_template)


def pad_token_id(tokenizer) -> int:
    """The tokenizer's pad id, else its EOS id, else 0 (only used under a zero attention mask)."""
    for tid in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(tid, int):
            return tid
    return 0


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every token id that ends a response: the tokenizer's EOS and the generation config's EOS ids."""
    ids: list[int] = []
    cfg = getattr(model, "generation_config", None)
    for tid in (getattr(tokenizer, "eos_token_id", None), getattr(cfg, "eos_token_id", None)):
        if isinstance(tid, int):
            ids.append(tid)
        elif isinstance(tid, (list, tuple)):
            ids.extend(int(t) for t in tid)
    return sorted(set(ids))


def _prompt_ids(tokenizer, prompt: str, use_chat: bool) -> list[int]:
    if use_chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def prompt_token_ids(tokenizer, prompts: list[str], *, chat_template: bool | None = None) -> list[list[int]]:
    """The token ids of each prompt on its own, unpadded: what the model reads for it (through the chat
    template when ``chat_template``, by default whenever the tokenizer has one). ``len`` of a row is the
    prompt's real token count."""
    use_chat = _uses_chat_template(tokenizer, chat_template)
    rows = []
    for p in prompts:
        ids = _prompt_ids(tokenizer, p, use_chat)
        if len(ids) == 0:
            raise InputError(f"prompts: the prompt {p!r} tokenises to no tokens")
        rows.append(ids)
    return rows


def left_pad(rows: list[list[int]], pad: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids [B, P], attention_mask [B, P])`` of token rows, left padded with ``pad``."""
    P = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), P), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), P), dtype=torch.long)
    for b, r in enumerate(rows):
        input_ids[b, P - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[b, P - len(r):] = 1
    return input_ids.to(device), mask.to(device)


def encode_prompts(tokenizer, prompts: list[str], *, chat_template: bool | None = None,
                   device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``(input_ids [B, P], attention_mask [B, P])`` of the prompts.

    With ``chat_template`` (default: whenever the tokenizer has one, as instruct models expect) each
    prompt becomes one user turn followed by the generation prompt. Each prompt is tokenised on its
    own, so its ids do not depend on the batch it is in.
    """
    rows = prompt_token_ids(tokenizer, prompts, chat_template=chat_template)
    return left_pad(rows, pad_token_id(tokenizer), device)


def truncate_prompt(tokenizer, prompt: str, max_tokens: int, *, chat_template: bool | None = None) -> tuple[str, list[int]]:
    """``prompt`` cut from the left to a text whose encoding (chat template included) has at most
    ``max_tokens`` tokens: ``(text, ids)``, the text being the decoded last tokens of the prompt.

    The prompt's own tokens are dropped, never the chat template's (its header and generation prompt
    stay), and the result is re-encoded exactly as :func:`prompt_token_ids` encodes a prompt, so aligning
    the returned text directly gives the same ids. ValueError when even an empty prompt would not fit.
    """
    use_chat = _uses_chat_template(tokenizer, chat_template)
    ids = _prompt_ids(tokenizer, prompt, use_chat)
    if len(ids) <= max_tokens:
        return prompt, ids
    content = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    drop = len(ids) - max_tokens
    while drop < len(content):
        text = tokenizer.decode(content[drop:], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if text.startswith("\ufffd"):  # the cut split a character: drop the rest of it too
            drop += 1
            continue
        ids = _prompt_ids(tokenizer, text, use_chat) if text.strip() else []
        if ids and len(ids) <= max_tokens:
            return text, ids
        drop += max(1, len(ids) - max_tokens)
    raise InputError(f"truncate_prompt: the chat template alone takes more than the {max_tokens} tokens left for "
                     "the prompt; lower max_new_tokens")


def response_texts(tokenizer, tokens: torch.Tensor, lengths: torch.Tensor, eos_ids: Sequence[int]) -> tuple[list[str], list[list[int]]]:
    """Decoded responses (EOS and everything after it dropped, special tokens skipped) and their ids."""
    eos = set(int(e) for e in eos_ids)
    texts, id_lists = [], []
    for row, n in zip(tokens.tolist(), lengths.tolist()):
        ids = row[:n]
        if ids and ids[-1] in eos:
            ids = ids[:-1]
        id_lists.append(ids)
        texts.append(tokenizer.decode(ids, skip_special_tokens=True))
    return texts, id_lists
