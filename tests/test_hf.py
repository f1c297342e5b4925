"""fastalign's methods as Hugging Face ``generate`` decoding methods: the callable form
(``custom_generate=fastalign.hf.aisp``), the Hub folder form (``custom_generate="<dir>"``), the
conventions of a decoding method (max_new_tokens, EOS and pad from the generation config, output shaped
like generate's) and clear errors for what is not supported."""
from __future__ import annotations

import pytest
import torch

import _tiny
import fastalign.hf
from fastalign.methods.aisp import aisp_generate
from fastalign.methods.bon import bon_generate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = _tiny.PROMPTS[:3]
AISP = dict(n=3, iterations=2, sigma=1.0, backend="torch")


def _inputs(tok=None):
    tok = tok or _tiny.tokenizer()
    return tok(PROMPTS, return_tensors="pt", padding=True)


def _expected(inputs, results, max_new_tokens, eos=1, pad=0):
    rows = [r.response_ids + ([eos] if len(r.response_ids) < max_new_tokens else []) for r in results]
    T = max(len(r) for r in rows)
    out = torch.full((len(rows), inputs["input_ids"].shape[1] + T), pad, dtype=torch.long)
    out[:, :inputs["input_ids"].shape[1]] = inputs["input_ids"]
    for b, ids in enumerate(rows):
        out[b, inputs["input_ids"].shape[1]:inputs["input_ids"].shape[1] + len(ids)] = torch.tensor(ids)
    return out


def test_aisp_as_a_custom_generate_callable_equals_aisp_generate():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    inputs = _inputs(tok)
    reward = _tiny.count_reward("w7")
    out = model.generate(**inputs, custom_generate=fastalign.hf.aisp, reward=reward, text_tokenizer=tok,
                         max_new_tokens=6, do_sample=False, **AISP)
    want = aisp_generate(model, tok, PROMPTS, reward, max_new_tokens=6, progress=False, **AISP)
    assert torch.equal(out, _expected(inputs, want, 6))


def test_best_of_n_samples_with_the_generation_configs_warpers():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    inputs = _inputs(tok)
    reward = _tiny.count_reward("w7")
    out = model.generate(**inputs, custom_generate=fastalign.hf.bon, reward=reward, text_tokenizer=tok, n=5,
                         max_new_tokens=6, do_sample=True, temperature=0.8, top_k=20, top_p=0.9)
    want = bon_generate(model, tok, PROMPTS, reward, n=5, max_new_tokens=6, temperature=0.8, top_k=20, top_p=0.9,
                        progress=False)
    assert torch.equal(out, _expected(inputs, want, 6))


def test_max_length_eos_and_pad_come_from_the_generation_config():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    inputs = _inputs(tok)
    P = inputs["input_ids"].shape[1]
    reward = _tiny.count_reward("w7")
    out = model.generate(**inputs, custom_generate=fastalign.hf.aisp, reward=reward, text_tokenizer=tok,
                         max_length=P + 4, eos_token_id=[1, 9], pad_token_id=2, do_sample=False, **AISP)
    assert out.shape[1] <= P + 4 and torch.equal(out[:, :P], inputs["input_ids"])
    for row in out[:, P:].tolist():  # after an EOS (1 or 9), only the pad id (2)
        ends = [i for i, t in enumerate(row) if t in (1, 9)]
        if ends:
            assert all(t == 2 for t in row[ends[0] + 1:])


def test_right_padded_prompts_decode_like_left_padded_ones():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    left = _inputs(tok)
    ids, mask = left["input_ids"], left["attention_mask"]
    order = torch.argsort(1 - mask, dim=1, stable=True)  # the same rows, right padded
    kw = dict(custom_generate=fastalign.hf.aisp, reward=_tiny.count_reward("w7"), text_tokenizer=tok,
              max_new_tokens=6, do_sample=False, **AISP)
    out_left = model.generate(input_ids=ids, attention_mask=mask, **kw)
    out_right = model.generate(input_ids=ids.gather(1, order), attention_mask=mask.gather(1, order), **kw)
    P = ids.shape[1]
    assert torch.equal(out_left[:, P:], out_right[:, P:])


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_beams=2), "num_beams"),
    (dict(num_return_sequences=2), "num_return_sequences"),
    (dict(do_sample=True), "do_sample"),
    (dict(repetition_penalty=1.3), "RepetitionPenaltyLogitsProcessor"),
    (dict(return_dict_in_generate=True), "return_dict_in_generate"),
    (dict(text_tokenizer=None), "text_tokenizer"),
    (dict(reward=None), "reward"),
])
def test_what_is_not_supported_is_an_error_not_ignored(kwargs, match):
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    call = dict(custom_generate=fastalign.hf.aisp, reward=_tiny.count_reward(), text_tokenizer=tok,
                max_new_tokens=4, do_sample=False, **AISP)
    call.update(kwargs)
    with pytest.raises(ValueError, match=match):
        model.generate(**_inputs(tok), **call)


def test_a_streamer_is_refused():
    """generate hands a callable custom_generate no streamer: fastalign finds it and refuses, instead of
    leaving the stream with the prompt only."""
    from transformers.generation.streamers import BaseStreamer

    class Recorder(BaseStreamer):
        def __init__(self):
            self.chunks = []

        def put(self, value):
            self.chunks.append(value)

        def end(self):
            self.chunks.append(None)

    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    with pytest.raises(ValueError, match="streamer"):
        model.generate(**_inputs(tok), custom_generate=fastalign.hf.aisp, reward=_tiny.count_reward(),
                       text_tokenizer=tok, max_new_tokens=4, do_sample=False, streamer=Recorder(), **AISP)


def test_the_hub_folder_loads_from_a_local_path_and_equals_the_callable(tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    hub = fastalign.hf.hub_dir()
    assert (hub / "custom_generate" / "generate.py").is_file() and (hub / "README.md").is_file()
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    inputs = _inputs(tok)
    reward = _tiny.count_reward("w7")
    via_hub = model.generate(**inputs, custom_generate=str(hub), trust_remote_code=True, method="aisp",
                             reward=reward, tokenizer=tok, max_new_tokens=6, do_sample=False, **AISP)
    via_callable = model.generate(**inputs, custom_generate=fastalign.hf.aisp, reward=reward, text_tokenizer=tok,
                                  max_new_tokens=6, do_sample=False, **AISP)
    assert torch.equal(via_hub, via_callable)
    bon = model.generate(**inputs, custom_generate=str(hub), trust_remote_code=True, method="bon", reward=reward,
                         tokenizer=tok, n=4, max_new_tokens=6, do_sample=True)
    assert bon.shape[0] == len(PROMPTS)
    with pytest.raises(ValueError, match="method"):
        model.generate(**inputs, custom_generate=str(hub), trust_remote_code=True, method="beam", reward=reward,
                       tokenizer=tok, max_new_tokens=4)


def test_sea_as_a_custom_generate_callable_equals_sea_generate():
    from fastalign.methods.sea import sea_generate

    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    inputs = _inputs(tok)
    reward = _tiny.SoftCountReward("w7")
    sea_kw = dict(chains=2, steps=3, reward_weight=5.0, seed=3, backend="torch")
    out = model.generate(**inputs, custom_generate=fastalign.hf.sea, reward=reward, text_tokenizer=tok,
                         max_new_tokens=5, do_sample=False, **sea_kw)
    want = sea_generate(model, tok, PROMPTS, reward, max_new_tokens=5, progress=False, metrics=False, **sea_kw)
    assert torch.equal(out, _expected(inputs, want, 5))
    via_hub = fastalign.hf.generate(model, method="sea", input_ids=inputs["input_ids"],
                                    attention_mask=inputs["attention_mask"], reward=reward, tokenizer=tok,
                                    max_new_tokens=5, do_sample=False, **sea_kw)
    assert torch.equal(via_hub, out)
    with pytest.raises(ValueError, match="do_sample"):
        model.generate(**inputs, custom_generate=fastalign.hf.sea, reward=reward, text_tokenizer=tok,
                       max_new_tokens=5, do_sample=True, **sea_kw)
    with pytest.raises(ValueError, match="decoding"):
        model.generate(**inputs, custom_generate=fastalign.hf.sea, reward=reward, text_tokenizer=tok,
                       max_new_tokens=5, do_sample=False, decoding="beam", **sea_kw)


LONG = " ".join(f"w{i % 61}" for i in range(300))  # 300 tokens; the tiny llama's context is 256


@pytest.mark.parametrize("method, kwargs", [("aisp", dict(do_sample=False, **AISP)), ("bon", dict(n=2)),
                                            ("sea", dict(steps=1, chains=2, do_sample=False))])
def test_a_row_past_the_context_is_refused_before_any_forward(method, kwargs):
    """Each row's own tokens (not the padded width) + max_new_tokens against the context: a ValueError
    naming the row, its count, the limit and the fixes, and the model never ran."""
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    inputs = tok(["w1 w2", LONG], return_tensors="pt", padding=True)
    reward = _tiny.SoftCountReward("w7")
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError) as info:
            model.generate(**inputs, custom_generate=getattr(fastalign.hf, method), reward=reward, text_tokenizer=tok,
                           max_new_tokens=4, **kwargs)
    finally:
        handle.remove()
    msg = str(info.value)
    for needle in ("input_ids[1]", "300 prompt tokens + 4 new tokens", "context of 256", "truncate_prompt=True",
                   "max_length=252"):
        assert needle in msg, msg
    assert not calls


def test_truncate_prompt_keeps_each_rows_last_tokens():
    """truncate_prompt=True: the long row is read as its last 252 tokens (the answer equals generating
    from those ids), and the output row still starts with the prompt as given."""
    from fastalign.engine._context import PromptTruncatedWarning

    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    reward = _tiny.count_reward("w7")
    inputs = tok(["w1 w2", LONG], return_tensors="pt", padding=True)
    with pytest.warns(PromptTruncatedWarning, match=r"input_ids\[1\].*last 252 of 300"):
        out = model.generate(**inputs, custom_generate=fastalign.hf.aisp, reward=reward, text_tokenizer=tok,
                             max_new_tokens=4, do_sample=False, truncate_prompt=True, **AISP)
    cut = tok(["w1 w2", " ".join(LONG.split()[-252:])], return_tensors="pt", padding=True)
    want = model.generate(**cut, custom_generate=fastalign.hf.aisp, reward=reward, text_tokenizer=tok,
                          max_new_tokens=4, do_sample=False, **AISP)
    P, Q = inputs["input_ids"].shape[1], cut["input_ids"].shape[1]
    assert torch.equal(out[:, :P], inputs["input_ids"]) and torch.equal(out[:, P:], want[:, Q:])
