"""The output folder of ``diffinv eval``: atomic writes, the run's ``config.json`` claim (a resumed
run must match it), per-image record and image paths; and the torchrun helpers that let several
processes share one folder."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from .data.io import _atomic_write
from .errors import DiffinvError
from .eval_items import _Item

RESULT_FILES = ("metrics.csv", "results.md", "figure.png", "psnr_bars.png")


# ------------------------------------------------------------------------------------ output dir
def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _write_json(path: Path, obj) -> None:
    _write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _write_pil(path: Path, img) -> None:
    _atomic_write(path, lambda f: img.save(f, format="PNG"))


def _claim_out(out: Path, run: dict, args: dict, overwrite: bool) -> None:
    """Record the run in ``out/config.json`` (or check it against the one there); refuse to mix runs.

    The file has the layout of :mod:`diffinv.config` (``command``, ``args``: what ``--config``
    reads back) plus ``run``, the resolved configuration (image list, model weights hash, ...)
    that a resumed run must match.
    """
    from .config import config_dict, write_json_atomic

    if out.exists() and not out.is_dir():
        raise DiffinvError(f"output path {out} exists and is not a folder")
    cfg_path = out / "config.json"
    if overwrite:
        for sub in ("records", "images"):
            shutil.rmtree(out / sub, ignore_errors=True)
        for name in (*RESULT_FILES, "config.json"):
            (out / name).unlink(missing_ok=True)
    elif cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text()).get("run")
        except (OSError, ValueError, AttributeError) as exc:
            raise DiffinvError(f"cannot read {cfg_path} ({exc}); pass --overwrite to start afresh") from None
        if not isinstance(old, dict):
            raise DiffinvError(
                f"{cfg_path} is not from 'diffinv eval'; choose another --out or pass --overwrite"
            )
        if old == run:
            return
        diffs = [k for k in [*run, *(k for k in old if k not in run)] if old.get(k) != run.get(k)]
        shown = [k if k == "items" else f"{k}: {old.get(k)!r} there, {run.get(k)!r} now" for k in diffs[:3]]
        raise DiffinvError(
            f"{out} holds results of a different configuration ({'; '.join(shown)}); "
            "rerun with the same options, choose another --out, or pass --overwrite"
        )
    elif (out / "records").exists():
        raise DiffinvError(f"{out} has records/ but no config.json; pass --overwrite to start afresh")
    write_json_atomic({**config_dict("eval", args), "run": run}, cfg_path)


def _record_path(out: Path, method: str, item: _Item) -> Path:
    return out / "records" / method / f"{item.name}.json"


def _image_path(out: Path, folder: str, name: str) -> Path:
    return out / "images" / folder / f"{name}.png"


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------ distributed
def _init_distributed() -> tuple[int, int, int, bool]:
    """(rank, world size, local rank, whether we created the process group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0, False
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local_rank, False
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank, True


def _together(world: int, step: Callable[[], object]):
    """Run ``step`` on every rank; if it fails on any rank, raise on all (no rank left waiting)."""
    if world <= 1:
        return step()
    import torch.distributed as dist

    result, error = None, None
    try:
        result = step()
    except Exception as exc:  # shared with the other ranks, re-raised below
        error = exc
    messages = [None] * world
    dist.all_gather_object(messages, None if error is None else " ".join(str(error).split()))
    if error is not None:
        raise error
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if failed:
        rank, msg = failed[0]
        raise DiffinvError(f"rank {rank} failed: {msg}")
    return result
