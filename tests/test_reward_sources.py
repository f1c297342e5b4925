"""Rewards named on the command line: a sequence-classification reward model by directory or id, and a
Python callable by MODULE:FUNCTION or FILE.py:FUNCTION; both checked before any policy model loads."""
from __future__ import annotations

import pytest
import torch

import _tiny
from fastalign.scoring import models
from fastalign.scoring.rewards import SequenceClassifierReward


def _save_classifier(path, num_labels=1):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    cfg = _tiny.config("llama")
    cfg.num_labels = num_labels
    model = AutoModelForSequenceClassification.from_config(cfg)
    model.save_pretrained(str(path))
    _tiny.tokenizer().save_pretrained(str(path))
    return model


def test_reward_model_from_a_directory_scores_like_the_adapter(tmp_path):
    model = _save_classifier(tmp_path / "rm")
    loaded = models.load_reward_model(str(tmp_path / "rm"))
    assert isinstance(loaded, SequenceClassifierReward)
    want = SequenceClassifierReward(model.eval(), _tiny.tokenizer())(["w1", "w2"], ["w3 w4", "w7"])
    torch.testing.assert_close(loaded(["w1", "w2"], ["w3 w4", "w7"]), want)


def test_reward_model_with_several_labels_needs_a_label(tmp_path):
    _save_classifier(tmp_path / "rm", num_labels=3)
    with pytest.raises(ValueError, match="3 labels.*--reward-label"):
        models.check_reward_model(str(tmp_path / "rm"))
    with pytest.raises(ValueError, match="--reward-label: expected 0..2"):
        models.check_reward_model(str(tmp_path / "rm"), label_index=3)
    models.check_reward_model(str(tmp_path / "rm"), label_index=2)
    r = models.load_reward_model(str(tmp_path / "rm"), label_index=2)
    assert r(["w1"], ["w2"]).shape == (1,)


def test_reward_model_errors(tmp_path):
    with pytest.raises(models.ModelNotFoundError, match="does not exist"):
        models.check_reward_model(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelNotFoundError, match="no config.json"):
        models.check_reward_model(str(tmp_path / "empty"))
    causal = _tiny.model("llama")
    causal.save_pretrained(str(tmp_path / "lm"))
    with pytest.raises(ValueError, match="not a sequence-classification"):
        models.check_reward_model(str(tmp_path / "lm"))
    with pytest.raises(models.ModelNotFoundError, match="not a local directory"):
        models.check_reward_model("no-such-org/no-such-reward-model")


def test_reward_fn_from_a_module_and_from_a_file(tmp_path, monkeypatch):
    fn = models.load_reward_fn("_tiny:count_reward")
    assert fn is _tiny.count_reward
    path = tmp_path / "my_reward.py"
    path.write_text("def length(prompts, responses):\n    return [float(len(r)) for r in responses]\n"
                    "NOT_CALLABLE = 3\n")
    length = models.load_reward_fn(f"{path}:length")
    assert length(["p"], ["abc"]) == [3.0]


@pytest.mark.parametrize("spec, match", [
    ("no_colon", "expected MODULE:FUNCTION"),
    ("json:", "expected MODULE:FUNCTION"),
    ("json:no_such_function", "has no attribute 'no_such_function'"),
    ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
    ("/no/such/file.py:f", "does not exist"),
])
def test_reward_fn_errors(spec, match):
    with pytest.raises((ValueError, models.ModelNotFoundError), match=match):
        models.load_reward_fn(spec)


def test_reward_fn_that_is_not_callable(tmp_path):
    path = tmp_path / "r.py"
    path.write_text("NOT_CALLABLE = 3\n")
    with pytest.raises(ValueError, match="not a callable"):
        models.load_reward_fn(f"{path}:NOT_CALLABLE")
