"""Align a whole prompt set across processes, GPUs and nodes, resumable, nothing lost.

``torchrun --nproc-per-node N [--nnodes M ...] -m fastalign align --prompts-file in.jsonl --out
results.jsonl ...`` runs one process per rank; :func:`align_file` is the same from Python (one process
is a job of one rank). The pieces:

* :func:`init` joins the job that torchrun describes in the environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``): torch.distributed with NCCL
  (plus gloo for the CPU objects it exchanges) where there are GPUs, gloo on CPUs; each rank computes on
  ``cuda:LOCAL_RANK``, or on the CPU.
* :func:`read_prompts` reads a JSONL file and reports every bad line with its number at once.
* :func:`make_batches` cuts the prompts into batches that depend only on the input (consecutive
  prompts with the same target, at most ``batch_size``). A batch is always aligned whole, by one rank,
  so a prompt meets the same batch neighbours whatever the number of ranks and across restarts: the
  results equal a single-process run's bit for bit on the same hardware (per-prompt seeds already make
  them independent of the batch up to float rounding; equal batches remove the rounding too).
* Rank 0 finds the batches still to do and broadcasts the list; rank r takes every W-th of them.

On disk, beside ``results.jsonl`` (on storage every rank can reach: a shared file system across nodes)::

    results.jsonl.parts/manifest.json      what the parts are results of (hash of the prompts and of
                                           the batches, the settings): a restart with other settings
                                           is refused instead of mixing results
    results.jsonl.parts/part-00003.jsonl   rank 3's results, one JSON line per prompt
                                           (``{"index": i, **result}``), appended, flushed and fsynced
                                           after every batch
    results.jsonl.parts/stats-00003.json   rank 3's counters for the summary, written when it is done

A line is valid when it ends with a newline and is a JSON object whose ``index`` names a prompt of the
input and whose ``prompt`` (if present) is that prompt. A restarted run skips every prompt that has a
valid line in any part file (whatever number of ranks wrote them); a truncated or corrupt line is
ignored and its prompt redone (a rank first cuts a partial last line, a write cut short by a kill,
off its own part file). When every rank is done, rank 0 writes the first valid line of every prompt in
input order to a temporary file beside ``results.jsonl``, fsyncs it, renames it into place and removes
the parts folder. Progress: rank 0 shows one bar (prompts done / total, rate, time left) fed by the
lines that appear in the part files, and prints a summary at the end (mean reward per method, reward
calls, wall-clock, throughput per rank).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from fastalign._progress import Progress
from fastalign.errors import InputError, InputTypeError

__all__ = ["Dist", "BadPromptsFile", "init", "close", "read_prompts", "make_batches", "model_placement",
           "parts_dir", "align_file", "format_summary"]

#: Version of the part-file layout (in the manifest: parts of another layout are never mixed in).
PARTS_FORMAT = 1
_SHOWN_BAD_LINES = 8
_POLL_SECONDS = 0.5


# ------------------------------------------------------------------------------------- the job
@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``rank`` of ``world_size`` (``local_rank`` of
    ``local_world_size`` on its node), the ``device`` it computes on, and ``group``, the gloo process
    group for the few CPU objects rank 0 broadcasts (None in a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")
    group: object | None = None
    owns_process_group: bool = False


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    if not text.strip():
        return default
    try:
        return int(text)
    except ValueError:
        raise InputError(f"${name}: expected an integer, got {text!r}") from None


def init(device=None, *, timeout: datetime.timedelta = datetime.timedelta(minutes=30)) -> Dist:
    """Join the job described by torchrun's environment variables, or stand alone as rank 0 of 1.

    With ``WORLD_SIZE > 1`` the default process group is initialised (unless it already is): backend
    ``"cpu:gloo,cuda:nccl"`` where GPUs are visible, ``"gloo"`` otherwise. ``device`` defaults to
    ``cuda:LOCAL_RANK`` where there are GPUs (made the current CUDA device), else the CPU.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", 1 if world == 1 else world)
    if world < 1 or not 0 <= rank < world or not 0 <= local_rank < max(local_world, 1):
        raise InputError(f"$RANK/$WORLD_SIZE/$LOCAL_RANK: expected 0 <= RANK < WORLD_SIZE and "
                         f"0 <= LOCAL_RANK < LOCAL_WORLD_SIZE, got {rank}/{world}/{local_rank} of {local_world}")
    if device is None:
        if torch.cuda.is_available():
            if local_rank >= torch.cuda.device_count():
                raise InputError(f"$LOCAL_RANK: rank {local_rank} of this node has no GPU of its own "
                                 f"({torch.cuda.device_count()} visible); start at most that many processes per node")
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world == 1:
        return Dist(local_world_size=local_world, device=device)
    import torch.distributed as dist

    owns = False
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=timeout)
        owns = True
    if (dist.get_rank(), dist.get_world_size()) != (rank, world):
        raise InputError(f"the process group is rank {dist.get_rank()} of {dist.get_world_size()}, but "
                         f"$RANK/$WORLD_SIZE say {rank} of {world}")
    group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo", timeout=timeout)
    return Dist(rank, world, local_rank, local_world, device, group, owns)


def close(d: Dist) -> None:
    """Destroy the process group if :func:`init` created it."""
    if d.owns_process_group:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _broadcast(d: Dist, value):
    """Rank 0's ``value`` on every rank."""
    if d.world_size == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, group=d.group)
    return box[0]


def model_placement(d: Dist, device_map: str | None = None) -> dict:
    """Keyword arguments of :func:`fastalign.scoring.models.load_model` for this rank: ``{"device": d.device}``,
    or with ``device_map`` (accelerate's big-model placement: ``"auto"``, ``"balanced"``, ...)
    ``{"device_map": device_map}``, where the ranks of a node share its GPUs out evenly (local rank i
    of k places its model on GPUs ``[i*g/k, (i+1)*g/k)`` through ``max_memory``)."""
    if device_map is None:
        return {"device": d.device}
    if not torch.cuda.is_available() or d.local_world_size == 1:
        return {"device_map": device_map}
    gpus = torch.cuda.device_count()
    per_rank = gpus // d.local_world_size
    if per_rank == 0:
        raise InputError(f"device_map: {d.local_world_size} processes on this node share {gpus} GPUs, fewer "
                         "than one each; start at most one process per GPU")
    import psutil

    mine = range(d.local_rank * per_rank, (d.local_rank + 1) * per_rank)
    memory: dict = {i: torch.cuda.mem_get_info(i)[0] for i in mine}
    memory["cpu"] = psutil.virtual_memory().available // d.local_world_size
    return {"device_map": device_map, "max_memory": memory}


# ----------------------------------------------------------------------------------- the input
class BadPromptsFile(InputError):
    """Lines of a prompts file that are not prompts; ``bad_lines`` lists ``(line number, reason)``."""

    def __init__(self, path, bad_lines: Sequence[tuple[int, str]]):
        self.path = str(path)
        self.bad_lines = list(bad_lines)
        shown = "; ".join(f"line {n}: {why}" for n, why in self.bad_lines[:_SHOWN_BAD_LINES])
        more = len(self.bad_lines) - _SHOWN_BAD_LINES
        tail = f"; and {more} more" if more > 0 else ""
        count = len(self.bad_lines)
        super().__init__(f"{self.path}: {count} bad line{'s' if count != 1 else ''}: {shown}{tail}")


def _check_line(raw: bytes, first: bool) -> tuple[dict | None, str | None]:
    """``(item, None)`` for a prompt line, ``(None, reason)`` for a bad one, ``(None, None)`` for a blank one."""
    try:
        text = raw.decode("utf-8-sig" if first else "utf-8").rstrip("\r")
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    if not text.strip():
        return None, None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg})"
    if isinstance(obj, str):
        obj = {"prompt": obj}
    if not isinstance(obj, dict):
        return None, f"expected a JSON object or string, got {type(obj).__name__}"
    prompt = obj.get("prompt")
    if "prompt" not in obj:
        return None, 'no "prompt"'
    if not isinstance(prompt, str) or not prompt.strip():
        return None, 'empty "prompt"' if isinstance(prompt, str) else '"prompt" is not a string'
    target = obj.get("target", "x")
    if not isinstance(target, str) or not target.strip():
        return None, '"target" is empty or not a string'
    return obj, None


def read_prompts(path) -> list[dict]:
    """The prompts of a JSONL file, as dicts with at least ``"prompt"``.

    Each non-blank line is a JSON object with a non-empty ``"prompt"`` string (an optional
    ``"target"`` must be a non-empty string; other fields are kept), or a bare JSON string. Every bad
    line is reported at once with its number (:class:`BadPromptsFile`, a ValueError); a file with no
    prompt is a ValueError too.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prompts_file: {str(path)!r} does not exist")
    items, bad = [], []
    for lineno, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        item, why = _check_line(raw, lineno == 1)
        if why is not None:
            bad.append((lineno, why))
        elif item is not None:
            items.append(item)
    if bad:
        raise BadPromptsFile(path, bad)
    if not items:
        raise InputError(f"prompts_file: {str(path)!r} holds no prompts")
    return items


def _target(item: dict):
    return item.get("target")


def make_batches(items: Sequence[dict], batch_size: int, key: Callable[[dict], object] | None = None) -> list[list[int]]:
    """Index lists of consecutive prompts with equal ``key(item)`` (default: the item's ``"target"``),
    at most ``batch_size`` each: e.g. ``[[0, 1], [2], [3, 4]]``. They depend only on the input."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    key = key or _target
    batches: list[list[int]] = []
    last = object()
    for i, item in enumerate(items):
        k = key(item)
        if not batches or len(batches[-1]) >= batch_size or k != last:
            batches.append([])
        batches[-1].append(i)
        last = k
    return batches


# -------------------------------------------------------------------------------- the part files
def parts_dir(out) -> Path:
    """The folder of part files of the output file ``out``: ``out`` + ``.parts``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _part_file(folder: Path, rank: int) -> Path:
    return folder / f"part-{rank:05d}.jsonl"


def _stats_file(folder: Path, rank: int) -> Path:
    return folder / f"stats-{rank:05d}.json"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _valid_index(line: bytes, items: Sequence[dict]) -> int | None:
    """The prompt index of a valid part-file line (see the module docstring), else None."""
    if not line.endswith(b"\n"):
        return None
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    if not isinstance(rec, dict):
        return None
    i = rec.get("index")
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(items):
        return None
    if "prompt" in rec and rec["prompt"] != items[i]["prompt"]:
        return None
    return i


def _part_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.jsonl"))


def _read_parts(folder: Path, items: Sequence[dict]) -> dict[int, bytes]:
    """The first valid line of every prompt that has one, over all part files (in name order)."""
    found: dict[int, bytes] = {}
    for path in _part_files(folder):
        with open(path, "rb") as f:
            for line in f:
                i = _valid_index(line, items)
                if i is not None and i not in found:
                    found[i] = line
    return found


def _complete_length(path: Path) -> int:
    """Bytes of ``path`` up to and including its last newline (0 if missing or without one)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return 0
    with f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            start = max(0, pos - 65536)
            f.seek(start)
            k = f.read(pos - start).rfind(b"\n")
            if k >= 0:
                return start + k + 1
            pos = start
        return 0


def _cut_partial_tail(path: Path) -> None:
    """Cut a last line without its newline (a write cut short by a kill) off ``path``."""
    if path.exists():
        keep = _complete_length(path)
        if keep != path.stat().st_size:
            with open(path, "rb+") as f:
                f.truncate(keep)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _manifest(items: Sequence[dict], batches: list[list[int]], settings: dict | None) -> dict:
    manifest = {"format": PARTS_FORMAT, "prompts": len(items), "prompts_sha256": _digest(list(items)),
                "batches": len(batches), "batches_sha256": _digest(batches), "settings": settings or {}}
    return json.loads(json.dumps(manifest))  # as it reads back from disk


def _difference(old: dict, new: dict) -> str:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            return f"{key}: {_difference(a, b)}"
        if key.endswith("sha256"):
            return f"{key[:-7]} differ"
        return f"{key} {a!r} there, {b!r} now"
    return "nothing"


def _lock(folder: Path):
    """Rank 0: an exclusive lock on ``folder`` held until the run ends (the open file; None where
    ``fcntl`` is missing), so that a second job on the same output stops instead of mixing its
    writes in. Raises BlockingIOError while another job holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    f = open(folder / "lock", "a")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise
    return f


def _claim_parts(folder: Path, manifest: dict) -> str | None:
    """Rank 0: make ``folder`` hold the parts of this run. Returns an error message if it holds
    another run's parts (never removed here: they may be hours of work)."""
    path = folder / "manifest.json"
    if path.exists() or _part_files(folder):
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old == manifest:
            return None
        if old is not None:
            return (f"{folder} holds the parts of a different run ({_difference(old, manifest)}); rerun that "
                    "command to finish it, or remove the folder to start over")
        if _part_files(folder):
            return f"{folder} holds part files but no readable manifest.json; remove the folder to start over"
    _write_atomic(path, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
    return None


# ------------------------------------------------------------------------------------- progress
class _Progress:
    """Rank 0's bar (fastalign's one reporter, :class:`fastalign._progress.Progress`: prompts done /
    total, rate and time left), fed by the newline-terminated lines that appear in the part files (a
    thread polls their sizes), so every rank's progress shows without any collective."""

    def __init__(self, folder: Path, total: int, done: int, enabled: bool):
        self.folder = folder
        self.offsets = {p: _complete_length(p) for p in _part_files(folder)}
        self.bar = Progress("fastalign align", total, enabled=enabled, initial=done, unit="prompt", rate=True)
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fastalign-progress", daemon=True)
        if enabled:
            self._thread.start()

    def _new_lines(self, path: Path) -> int:
        start = self.offsets.get(path, 0)
        try:
            with open(path, "rb") as f:
                end = f.seek(0, os.SEEK_END)
                start = min(start, end)
                f.seek(start)
                data = f.read(end - start)
        except OSError:
            return 0
        complete = data.rfind(b"\n") + 1
        self.offsets[path] = start + complete
        return data.count(b"\n", 0, complete)

    def poll(self) -> None:
        with self._poll_lock:  # the thread and the caller's last poll
            self.bar.advance(sum(self._new_lines(p) for p in _part_files(self.folder)))

    def _loop(self) -> None:
        while not self._stop.wait(_POLL_SECONDS):
            self.poll()

    def close(self, complete: bool) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if complete and self.bar.total is not None and self.bar.done < self.bar.total:
            self.bar.update(self.bar.total)
        self.bar.close()


# ------------------------------------------------------------------------------------ the work
def _as_dict(result) -> dict:
    if isinstance(result, dict):
        return result
    to_dict = getattr(result, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"align_batch: expected AlignResult objects or dicts, got {type(result).__name__}")


def _plain(obj):
    """``json.dumps`` fallback: numpy scalars/arrays and tensors as plain numbers and lists."""
    if callable(getattr(obj, "tolist", None)):
        return obj.tolist()
    raise TypeError(f"align_batch: a result field of type {type(obj).__name__} is not JSON-serialisable")


def _lines(results, indices: Sequence[int], missing: Iterable[int]) -> bytes:
    """The part-file lines ``{"index": i, **result}`` of the batch's prompts that are still missing."""
    if not isinstance(results, (list, tuple)):
        results = [results]
    if len(results) != len(indices):
        raise ValueError(f"align_batch: expected {len(indices)} results (one per prompt), got {len(results)}")
    wanted = set(missing)
    out = []
    for i, result in zip(indices, results):
        if i in wanted:
            rec = {"index": i}
            rec.update((k, v) for k, v in _as_dict(result).items() if k != "index")
            out.append(json.dumps(rec, default=_plain).encode("utf-8") + b"\n")
    return b"".join(out)


def _run_rank(d: Dist, items, batches, mine, folder: Path, run_id: str, align_batch, prepare) -> None:
    """Align this rank's batches (``mine``: ``(batch, missing indices)``), appending to its part file,
    then write its stats file."""
    stats = {"run_id": run_id, "rank": d.rank, "device": str(d.device), "prompts": 0, "batches": 0,
             "load_seconds": 0.0, "align_seconds": 0.0}
    if mine:
        folder.mkdir(exist_ok=True)  # on a shared file system rank 0's new folder may show up late here
        part = _part_file(folder, d.rank)
        _cut_partial_tail(part)
        t0 = time.perf_counter()
        if prepare is not None:
            prepare()
        t1 = time.perf_counter()
        with open(part, "ab") as f:
            for b, missing in mine:
                results = align_batch([items[i] for i in batches[b]])
                f.write(_lines(results, batches[b], missing))
                f.flush()
                os.fsync(f.fileno())
                stats["prompts"] += len(missing)
                stats["batches"] += 1
        stats["load_seconds"] = t1 - t0
        stats["align_seconds"] = time.perf_counter() - t1
    _write_atomic(_stats_file(folder, d.rank), json.dumps(stats).encode("utf-8"))


def _wait_for_ranks(folder: Path, run_id: str, world: int) -> list[dict]:
    """Rank 0: the stats of every rank of this run, once each has written them."""
    stats: dict[int, dict] = {}
    while True:
        for r in range(world):
            if r not in stats:
                try:
                    s = json.loads(_stats_file(folder, r).read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if s.get("run_id") == run_id:
                    stats[r] = s
        if len(stats) == world:
            return [stats[r] for r in range(world)]
        time.sleep(_POLL_SECONDS)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _merge(folder: Path, items: Sequence[dict], out: Path) -> dict:
    """Rank 0: write ``out`` atomically from the part files (input order); return per-method totals."""
    lines = _read_parts(folder, items)
    missing = [i for i in range(len(items)) if i not in lines]
    if missing:
        raise RuntimeError(f"{len(missing)} prompts have no valid result in {folder} (first: index {missing[0]}); "
                           "rerun the same command to redo them")
    per_method: dict[str, dict] = {}
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        for i in range(len(items)):
            f.write(lines[i])
            rec = json.loads(lines[i])
            m = per_method.setdefault(str(rec.get("method")), {"prompts": 0, "rewards": [], "base_rewards": [],
                                                                 "reward_calls": 0})
            m["prompts"] += 1
            m["rewards"].append(rec.get("reward"))
            m["base_rewards"].append(rec.get("base_reward"))
            m["reward_calls"] += int(rec.get("reward_calls") or 0)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    _fsync_dir(out.parent)
    return {name: {"prompts": m["prompts"], "mean_reward": _mean(m["rewards"]),
                   "mean_base_reward": _mean(m["base_rewards"]), "reward_calls": m["reward_calls"]}
            for name, m in per_method.items()}


def format_summary(summary: dict) -> str:
    """The summary of :func:`align_file` as the lines rank 0 prints."""
    def num(x):
        return "-" if x is None else f"{x:.4f}"

    lines = [f"fastalign align: {summary['prompts']} prompts -> {summary['out']} ({summary['resumed']} done before, "
             f"{summary['aligned']} in this run) in {summary['seconds']:.1f} s on {len(summary['ranks'])} rank(s)"]
    for name, m in summary["methods"].items():
        lines.append(f"  {name}: {m['prompts']} prompts, mean reward {num(m['mean_reward'])} "
                     f"(base {num(m['mean_base_reward'])}), {m['reward_calls']} reward calls")
    for s in summary["ranks"]:
        lines.append(f"  rank {s['rank']} ({s['device']}): {s['prompts']} prompts in {s['batches']} batches, "
                     f"{s['align_seconds']:.1f} s (+{s['load_seconds']:.1f} s loading), "
                     f"{s['prompts_per_second']:.3f} prompts/s")
    return "\n".join(lines)


def align_file(prompts, out, align_batch: Callable[[list[dict]], Sequence], *, prepare: Callable[[], None] | None = None,
               batch_size: int = 4, group_key: Callable[[dict], object] | None = None, settings: dict | None = None,
               dist: Dist | None = None, progress: bool = True) -> dict | None:
    """Align every prompt of ``prompts`` into the JSONL file ``out``, sharded over the job's ranks.

    Every rank calls this with the same arguments (torchrun runs the same command on each). ``out``
    gets one line per prompt in input order, ``{"index": i, **result}`` (``i`` counts prompts from 0),
    once every prompt is done; until then the results live in :func:`parts_dir` ``(out)``, and calling
    again with the same arguments (after a crash or a kill) does only the prompts that are missing.

    Args:
        prompts: a JSONL path (:func:`read_prompts`) or a list of dicts with a ``"prompt"``.
        out: the output file (not a folder); its folder must exist, be writable and, across nodes, be
            shared (ValueError before any work otherwise).
        align_batch: ``align_batch(items: list[dict]) -> results``, one per item, each an
            :class:`~fastalign.methods.results.AlignResult` (written through ``to_dict()``) or a JSON-serialisable
            dict. It sees the batches of :func:`make_batches`, on this rank's device.
        prepare: called once on a rank that has work, before its first batch (load the models here: a
            rank with nothing to do loads nothing); timed apart in the summary.
        batch_size: at most this many prompts per ``align_batch`` call.
        group_key: a batch holds only prompts with equal ``group_key(item)`` (default: ``"target"``).
        settings: JSON-serialisable description of everything else that decides the results (method,
            its options, models, seed); stored with the parts, and a restart with other settings (or
            other prompts, or another batching) is refused (ValueError) instead of mixing results.
        dist: from :func:`init` (default: :func:`init` here, :func:`close` at the end).
        progress: rank 0 shows a progress bar and prints the summary on stderr.

    Returns:
        on rank 0, the summary: ``out``, ``prompts``, ``resumed`` (done before this run), ``aligned``
        (in this run), ``seconds`` (wall-clock of this run), ``methods`` (per method: ``prompts``,
        ``mean_reward``, ``mean_base_reward``, ``reward_calls``), ``ranks`` (per rank: ``device``,
        ``prompts``, ``batches``, ``load_seconds``, ``align_seconds``, ``prompts_per_second``);
        None on the other ranks.
    """
    t0 = time.perf_counter()
    if not callable(align_batch):
        raise InputTypeError(f"align_batch: expected a callable, got {type(align_batch).__name__}")
    items = read_prompts(prompts) if isinstance(prompts, (str, os.PathLike)) else list(prompts)
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise InputError(f"prompts[{i}]: expected a dict with a \"prompt\" string, got {item!r:.60}")
    if not items:
        raise InputError("prompts: expected at least one prompt, got none")
    from fastalign._files import output_file

    out = output_file(os.fspath(out), "out", "results.jsonl", replaced=True)  # before any work
    batches = make_batches(items, batch_size, group_key)
    own = dist is None
    d = init() if own else dist
    try:
        return _align_file(d, items, batches, out, align_batch, prepare, settings, progress, t0)
    finally:
        if own:
            close(d)


def _plan(folder: Path, items, batches, settings) -> dict:
    """Rank 0: claim the (locked) parts folder and list the batches still to do (with their missing indices)."""
    error = _claim_parts(folder, _manifest(items, batches, settings))
    if error is not None:
        return {"error": error}
    done = _read_parts(folder, items).keys()
    todo = [(b, [i for i in idx if i not in done]) for b, idx in enumerate(batches)]
    return {"error": None, "run_id": uuid.uuid4().hex, "done": len(done),
            "todo": [(b, missing) for b, missing in todo if missing]}


def _align_file(d: Dist, items, batches, out: Path, align_batch, prepare, settings, progress: bool, t0: float):
    folder = parts_dir(out)
    plan = lock = None
    if d.rank == 0:
        try:
            folder.mkdir(exist_ok=True)
            lock = _lock(folder)
            plan = _plan(folder, items, batches, settings)
        except BlockingIOError:
            plan = {"error": f"another run is writing to {folder}; wait for it to end (or stop it) and rerun"}
        except OSError as exc:
            plan = {"error": f"{folder}: {exc}"}
    try:
        plan = _broadcast(d, plan)
        if plan["error"]:
            raise InputError(f"out: {plan['error']}")
        return _run_and_merge(d, items, batches, out, folder, plan, align_batch, prepare, progress, t0)
    finally:
        if lock is not None:
            lock.close()


def _run_and_merge(d: Dist, items, batches, out: Path, folder: Path, plan: dict, align_batch, prepare,
                   progress: bool, t0: float):
    bar = _Progress(folder, len(items), plan["done"], progress) if d.rank == 0 else None
    complete = False
    try:
        _run_rank(d, items, batches, plan["todo"][d.rank::d.world_size], folder, plan["run_id"], align_batch, prepare)
        if d.rank != 0:
            return None
        stats = _wait_for_ranks(folder, plan["run_id"], d.world_size)
        bar.poll()
        methods = _merge(folder, items, out)
        complete = True
    finally:
        if bar is not None:
            bar.close(complete)
    shutil.rmtree(folder, ignore_errors=True)
    for s in stats:
        s.pop("run_id", None)
        s["prompts_per_second"] = s["prompts"] / s["align_seconds"] if s["align_seconds"] > 0 else 0.0
    summary = {"out": str(out), "prompts": len(items), "resumed": plan["done"],
               "aligned": sum(s["prompts"] for s in stats), "seconds": time.perf_counter() - t0,
               "methods": methods, "ranks": stats}
    if progress:
        print(format_summary(summary), file=sys.stderr, flush=True)
    return summary
