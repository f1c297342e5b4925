"""``tests/_archs.py`` builds every tiny architecture offline and as documented: eval mode, the
shared word vocabulary, a redrawn head (tied heads stay tied) and the 4 ``_tiny`` archs unchanged."""
import pytest
import torch

import _archs
import _tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# tied by their config's default (llama_tied by request); _tiny.model unties gpt2 and gemma2
TIED = {"llama_tied", "gemma", "cohere", "starcoder2", "gpt_bigcode", "opt", "falcon", "bloom", "gemma3", "mamba",
        "falcon_mamba", "zamba2", "lfm2", "recurrent_gemma", "t5", "bert"}


@pytest.mark.parametrize("name", _archs.ARCHS)
def test_tiny_arch_builds_as_documented(name):
    m = _archs.model(name)
    assert not m.training
    assert m.get_input_embeddings().weight.shape[0] == _tiny.VOCAB_SIZE
    assert _archs.is_tied(m) == (name in TIED)
    head = m.get_output_embeddings().weight.detach()
    assert 0.25 < float(head.std()) < 0.35  # redrawn from N(0, 0.3^2), shared matrix included
    assert m.can_generate() == (name != "bert")
    assert bool(getattr(m.config, "is_encoder_decoder", False)) == (name == "t5")


@pytest.mark.parametrize("name", _archs.CAUSAL_ARCHS)
def test_causal_arch_runs_on_the_word_tokenizer(name):
    enc = _tiny.tokenizer()(_tiny.PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = _archs.model(name)(**enc).logits
    assert logits.shape == (*enc["input_ids"].shape, _tiny.VOCAB_SIZE)
    assert torch.isfinite(logits).all()
    assert float(logits[:, -1].std()) > 0.5  # the scaled head spreads the logits


@pytest.mark.parametrize("name", _tiny.ARCHES)
def test_tiny_archs_are_tiny_models(name):
    ours, theirs = _archs.model(name).state_dict(), _tiny.model(name).state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_unknown_arch_is_named():
    with pytest.raises(ValueError, match="unknown tiny arch 'nope'"):
        _archs.config("nope")
