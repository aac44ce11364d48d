"""Train a small DDPM prior (epsilon objective) and export it in diffusers format.

    loss = E_{x0, t, eps} || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2   (Ho et al. eq. 14)

with AdamW, gradient clipping, an exponential moving average (EMA) of the weights (the EMA is what
gets exported), bf16 autocast on CUDA, atomic checkpoints and bit-exact ``resume``: every step's data
and noise come from a generator seeded by (seed, step), so a resumed run draws exactly what an
uninterrupted run would have.

Output folder::

    OUT/unet/config.json, OUT/unet/diffusion_pytorch_model.safetensors   (EMA weights, diffusers)
    OUT/scheduler/scheduler_config.json                                   (DDPMScheduler)
    OUT/checkpoint.pt     (model, EMA, optimiser, step, losses; read with weights_only=True)
    OUT/samples.png, OUT/loss.png, OUT/MODEL_CARD.md, OUT/train_config.json

Example
-------
>>> train(TrainConfig(data="ellipses", size=64, channels=1, out="runs/ct", steps=1000))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data.training import EllipseStream, ImageFolderCrops, training_stream  # noqa: F401
from .errors import DiffinvError
from .priors.schedules import VPSchedule

# ---------------------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    data: str  # an image folder, or "ellipses"
    out: str
    size: int = 64
    channels: int = 3
    steps: int = 10_000
    batch: int = 32
    lr: float = 5e-4
    warmup: int = 200
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    schedule: str = "linear"  # or "cosine"
    T: int = 1000
    seed: int = 0
    device: str = "cpu"
    checkpoint_minutes: float = 5.0
    sample_every: int = 2000  # steps between sample grids (0: only at the end)
    sample_count: int = 16
    sample_steps: int = 50
    block_out_channels: tuple[int, ...] = (32, 48, 64, 96)
    attention_levels: tuple[int, ...] = (2,)  # indices of levels that use self-attention
    norm_num_groups: int = 8
    attention_head_dim: int = 16
    quiet: bool = False
    init_from: str = ""  # a diffusers folder (e.g. a shipped prior) to start from instead of random weights
    window: str = ""  # CT slices in HU (DICOM, or 16-bit files with hu_offset): window preset or "C,W"
    hu_offset: float | None = None
    augment: str = ""  # "" (random crops and flips), a preset ("ct") or "rotate=10,zoom=0.1,..."
    name: str = ""
    notes: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.channels not in (1, 3):
            raise DiffinvError(f"channels must be 1 or 3, got {self.channels}")
        if self.size < 8 or self.size % 2 ** (len(self.block_out_channels) - 1):
            raise DiffinvError(
                f"size must be >= 8 and divisible by {2 ** (len(self.block_out_channels) - 1)}, got {self.size}"
            )
        for key in ("steps", "batch"):
            if getattr(self, key) < 1:
                raise DiffinvError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0 or not 0 <= self.ema_decay < 1:
            raise DiffinvError(f"need lr > 0 and 0 <= ema_decay < 1, got {self.lr}, {self.ema_decay}")
        if self.schedule not in ("linear", "cosine"):
            raise DiffinvError(f"schedule must be 'linear' or 'cosine', got {self.schedule!r}")
        if self.window:
            from .data.medical import parse_window

            parse_window(self.window)  # an unknown preset or a bad width fails before any work
        if self.augment:
            from .data.augment import Augmentation

            Augmentation.parse(self.augment)
        if self.data != "ellipses" and not Path(self.data).is_dir():
            raise DiffinvError(f"data must be an image folder or 'ellipses'; {self.data!r} is not a folder")


def make_unet(cfg: TrainConfig):
    """A diffusers UNet2DModel sized for CPU training (about 2M parameters by default)."""
    from diffusers import UNet2DModel

    levels = len(cfg.block_out_channels)
    down = tuple("AttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in range(levels))
    up = tuple(
        "AttnUpBlock2D" if levels - 1 - i in cfg.attention_levels else "UpBlock2D" for i in range(levels)
    )
    return UNet2DModel(
        sample_size=cfg.size,
        in_channels=cfg.channels,
        out_channels=cfg.channels,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=1,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=cfg.norm_num_groups,
        attention_head_dim=cfg.attention_head_dim,
    )


def make_schedule(cfg: TrainConfig) -> VPSchedule:
    return VPSchedule.linear(cfg.T) if cfg.schedule == "linear" else VPSchedule.cosine(cfg.T)


# ---------------------------------------------------------------------------------------- data


def make_data(cfg: TrainConfig):
    """The training stream of ``cfg.data``: ellipse phantoms, or random crops of an image folder."""
    return training_stream(cfg.data, cfg.size, cfg.channels, cfg.window, cfg.hu_offset, cfg.augment)


# ---------------------------------------------------------------------------------------- I/O


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def export_diffusers(unet, schedule_cfg: TrainConfig, out: Path, half: bool = True) -> None:
    """Save ``unet`` (fp16 weights when ``half``) and a DDPMScheduler config as a diffusers folder."""
    import copy

    from diffusers import DDPMScheduler

    model = copy.deepcopy(unet).to("cpu")
    if half:
        model = model.half()
    stage = out / ".export_tmp"
    if stage.exists():
        import shutil

        shutil.rmtree(stage)
    model.save_pretrained(stage / "unet", safe_serialization=True)
    DDPMScheduler(
        num_train_timesteps=schedule_cfg.T,
        beta_schedule="linear" if schedule_cfg.schedule == "linear" else "squaredcos_cap_v2",
        beta_start=1e-4,
        beta_end=2e-2,
        clip_sample=False,
    ).save_pretrained(stage / "scheduler")
    for sub in ("unet", "scheduler"):
        final = out / sub
        if final.exists():
            import shutil

            shutil.rmtree(final)
        os.replace(stage / sub, final)
    stage.rmdir()


def save_loss_curve(losses: list[float], path: Path, width: int = 480, height: int = 240) -> None:
    """A plain PIL plot of the running-mean loss (log scale), no plotting library needed."""
    from PIL import ImageDraw

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    if len(losses) >= 2:
        arr = np.asarray(losses, dtype=np.float64)
        k = max(1, len(arr) // 200)
        smooth = np.convolve(arr, np.ones(k) / k, mode="valid")
        logv = np.log10(np.maximum(smooth, 1e-8))
        lo, hi = logv.min(), logv.max() + 1e-9
        xs = 40 + np.arange(len(logv)) / max(1, len(logv) - 1) * (width - 50)
        ys = 10 + (hi - logv) / (hi - lo) * (height - 40)
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=(30, 90, 200), width=2)
        draw.text((2, 2), f"{10**hi:.3g}", fill="black")
        draw.text((2, height - 30), f"{10**lo:.3g}", fill="black")
    draw.text(
        (40, height - 14), f"training loss (log scale, running mean), {len(losses)} steps", fill="black"
    )
    _atomic(path, lambda p: img.save(p, format="PNG"))


def save_samples(unet, cfg: TrainConfig, path: Path, n: int = 16, steps: int = 50) -> None:
    from .priors.network import NetworkPrior
    from .priors.sampling import ddim_sample

    prior = NetworkPrior(unet, make_schedule(cfg), (cfg.channels, cfg.size, cfg.size))
    x = ddim_sample(prior, n, generator=torch.Generator().manual_seed(cfg.seed), steps=steps)
    from .viz import image_grid

    grid = image_grid(x, nrow=int(math.sqrt(n)))
    _atomic(path, lambda p: grid.save(p, format="PNG"))


# ---------------------------------------------------------------------------------------- training


def _init_weights(unet, folder: Path) -> None:
    """Load weights of a diffusers folder (its ``unet/`` or the folder itself) into ``unet``, strictly."""
    from safetensors.torch import load_file

    candidates = [
        folder / "unet" / "diffusion_pytorch_model.safetensors",
        folder / "diffusion_pytorch_model.safetensors",
    ]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DiffinvError(
            f"init_from: no diffusion_pytorch_model.safetensors in {folder} or {folder / 'unet'}"
        )
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    try:
        unet.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DiffinvError(
            f"init_from: weights in {path} do not fit this architecture ({str(exc)[:200]})"
        ) from exc


def denoising_loss(
    unet, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, alphas_cumprod: torch.Tensor, bf16: bool
) -> torch.Tensor:
    """Ho et al. eq. 14: || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2 (mean)."""
    ab = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=bf16):
        pred = unet(x_t, t).sample
    return torch.nn.functional.mse_loss(pred.float(), eps)


def optimise(unet, opt: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float) -> torch.Tensor:
    """One optimiser step on ``loss`` with the gradient norm clipped to ``grad_clip``; returns ``loss``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), grad_clip)
    opt.step()
    return loss


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Run (or resume) training; returns a summary dict (steps, images seen, final loss, seconds)."""
    from .preflight import check_output_dir

    cfg.validate()
    check_output_dir(cfg.out, "out")  # a file or read-only folder fails now, not at the first checkpoint
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    unet = make_unet(cfg).to(device)
    if cfg.init_from and not resume:
        _init_weights(unet, Path(cfg.init_from))  # before anything is written: bad weights leave no folder
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ema = make_unet(cfg).to(device)
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = make_schedule(cfg)
    ab_all = sched.alphas_cumprod.float().to(device)
    data = make_data(cfg)
    state = {"step": 0, "losses": [], "seconds": 0.0}

    ckpt_path = out / "checkpoint.pt"
    if resume:
        if not ckpt_path.exists():
            raise DiffinvError(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        unet.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        state = {
            "step": int(ckpt["step"]),
            "losses": ckpt["losses"].cpu().tolist(),
            "seconds": float(ckpt["seconds"]),
        }

    def save_checkpoint():
        flush_losses()
        payload = {
            "model": unet.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "step": state["step"],
            "losses": torch.tensor(state["losses"], dtype=torch.float64),
            "seconds": state["seconds"],
            "config": json.dumps(dataclasses.asdict(cfg)),
        }
        _atomic(ckpt_path, lambda p: torch.save(payload, p))
        save_loss_curve(state["losses"], out / "loss.png")

    _atomic(out / "train_config.json", lambda p: p.write_text(json.dumps(dataclasses.asdict(cfg), indent=2)))
    use_bf16 = device.type == "cuda"
    from tqdm.auto import tqdm

    ema_params, model_params = list(ema.parameters()), list(unet.parameters())
    pending_losses: list[torch.Tensor] = []

    def flush_losses() -> None:
        if pending_losses:
            state["losses"].extend(torch.stack(pending_losses).float().cpu().tolist())
            pending_losses.clear()

    bar = tqdm(total=cfg.steps, initial=state["step"], disable=cfg.quiet, desc="train")
    last_ckpt = time.monotonic()
    t_start = time.monotonic() - state["seconds"]
    unet.train()
    stop = _GracefulStop(out / "STOP")
    while state["step"] < cfg.steps and not stop():
        step = state["step"]
        g = _step_generator(cfg.seed, step)
        x0 = data.batch(cfg.batch, g).to(device) * 2 - 1  # model space [-1, 1]
        t = torch.randint(0, cfg.T, (cfg.batch,), generator=g).to(device)
        eps = torch.randn(x0.shape, generator=g).to(device)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
        loss = optimise(unet, opt, denoising_loss(unet, x0, t, eps, ab_all, use_bf16), cfg.grad_clip)
        with torch.no_grad():
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))  # warm-up of the EMA
            torch._foreach_lerp_(ema_params, model_params, 1 - decay)  # one fused update, not one per tensor
        state["step"] = step + 1
        pending_losses.append(loss.detach())
        if len(pending_losses) >= 50 or not cfg.quiet:  # .item() waits for the GPU: sync every 50 steps
            flush_losses()
        state["seconds"] = time.monotonic() - t_start
        bar.update(1)
        if not cfg.quiet:
            bar.set_postfix(
                loss=f"{float(loss.detach()):.4f}",
                img_s=f"{state['step'] * cfg.batch / max(state['seconds'], 1e-9):.1f}",
            )
        if time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60:
            save_checkpoint()
            export_diffusers(ema, cfg, out)
            last_ckpt = time.monotonic()
        if cfg.sample_every and state["step"] % cfg.sample_every == 0 and state["step"] < cfg.steps:
            save_samples(ema, cfg, out / "samples.png", cfg.sample_count, cfg.sample_steps)
    bar.close()
    stop.restore()
    save_checkpoint()
    export_diffusers(ema, cfg, out)
    save_samples(ema, cfg, out / "samples.png", cfg.sample_count, cfg.sample_steps)
    summary = {
        "steps": state["step"],
        "images_seen": state["step"] * cfg.batch,
        "final_loss": float(np.mean(state["losses"][-100:])) if state["losses"] else float("nan"),
        "seconds": state["seconds"],
        "parameters": sum(p.numel() for p in unet.parameters()),
        "hardware": _hardware(device),
    }
    write_model_card(cfg, summary, out)
    return summary


class _GracefulStop:
    """True once SIGTERM/SIGINT arrived or a STOP file exists: training then ends cleanly
    (checkpoint, export, model card) instead of dying mid-write."""

    def __init__(self, stop_file: Path):
        import signal

        self.stop_file, self.flag = stop_file, False
        self.previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread
                pass

    def _handle(self, signum, frame):
        self.flag = True

    def __call__(self) -> bool:
        if self.stop_file.exists():
            self.stop_file.unlink()
            self.flag = True
        return self.flag

    def restore(self) -> None:
        import signal

        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def write_model_card(cfg: TrainConfig, summary: dict, out: Path) -> None:
    data_desc = (
        "random ellipse phantoms from `diffinv.data.ellipses.random_phantoms` (generated on the fly, seeded)"
        if cfg.data == "ellipses"
        else f"random {cfg.size}x{cfg.size} crops (and half-resolution crops, flips) of `{cfg.data}`"
    )
    if cfg.augment:
        from .data.augment import Augmentation

        data_desc = (
            f"whole images of `{cfg.data}` area-resized to {cfg.size}x{cfg.size} under random augmentation "
            f"({Augmentation.parse(cfg.augment).describe()}) and flips"
        )
    credit = ""
    if "BSD" in cfg.data or "natural" in cfg.data:
        credit = (
            "\n**Data credit:** Berkeley Segmentation Dataset (Martin, Fowlkes, Tal, Malik, ICCV 2001), "
            "distributed for research use.\n"
        )
    command = (
        f"diffinv train --data {cfg.data} --size {cfg.size} --channels {cfg.channels} --out {cfg.out} "
        f"--steps {cfg.steps} --batch {cfg.batch} --lr {cfg.lr} --seed {cfg.seed}"
        + (f" --augment {cfg.augment}" if cfg.augment else "")
    )
    extra = "\n".join(f"- {k}: {v}" for k, v in cfg.notes.items())
    text = f"""# {cfg.name or Path(cfg.out).name}

DDPM epsilon-prediction prior, {cfg.channels} channel(s), {cfg.size}x{cfg.size}, [-1, 1] model space,
{cfg.schedule} beta schedule, T = {cfg.T}. Weights: EMA (decay {cfg.ema_decay}), fp16 safetensors,
diffusers `UNet2DModel` ({summary["parameters"] / 1e6:.2f} M parameters).

- Data: {data_desc}
- Steps: {summary["steps"]}, batch {cfg.batch}, images seen: {summary["images_seen"]}
- Optimiser: AdamW lr {cfg.lr} (warm-up {cfg.warmup}), grad clip {cfg.grad_clip}
- Hardware: {summary["hardware"]}; wall time {summary["seconds"] / 60:.1f} min
- Final loss (mean of last 100 steps): {summary["final_loss"]:.4f}
{extra}
{credit}
Retrain (or continue with `--resume` and a larger `--steps`):

    {command}

![samples](samples.png) ![loss](loss.png)
"""
    _atomic(out / "MODEL_CARD.md", lambda p: p.write_text(text))
