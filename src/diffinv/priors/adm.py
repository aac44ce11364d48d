"""ADM: the UNet of OpenAI's improved/guided-diffusion (Dhariwal & Nichol 2021), written from scratch.

The module tree reproduces the parameter names of the released checkpoints exactly, so that
``256x256_diffusion_uncond.pt`` (ImageNet, guided-diffusion) and ``ffhq_10m.pt`` (FFHQ, DPS)
load with ``load_state_dict(strict=True)``. The layout, level by level:

* ``time_embed.{0,2}``: Linear(C, 4C), SiLU, Linear(4C, 4C) on the sinusoidal embedding of t
  (``label_emb``: Embedding(num_classes, 4C) when class-conditional).
* ``input_blocks.0.0``: Conv2d(in, C0, 3). Then, per level ``l`` with width ``C*mult[l]``,
  ``num_res_blocks`` blocks ``[ResBlock, (AttentionBlock)]``, and between levels one
  down-sampling block (``ResBlock(down=True)`` with ``resblock_updown``, else ``Downsample.op``).
* ``middle_block.{0,1,2}``: ResBlock, AttentionBlock, ResBlock.
* ``output_blocks``: per level (reversed) ``num_res_blocks + 1`` blocks
  ``[ResBlock(ch + skip), (AttentionBlock), (up-sampling block)]``.
* ``out.{0,2}``: GroupNorm, SiLU, Conv2d(C0, out, 3).

ResBlock parameters: ``in_layers.{0 (norm), 2 (conv)}``, ``emb_layers.1`` (Linear to 2*out with
scale-shift norm), ``out_layers.{0 (norm), 3 (conv)}``, ``skip_connection`` (1x1 conv when the
width changes). AttentionBlock: ``norm``, ``qkv`` (Conv1d, C -> 3C), ``proj_out`` (Conv1d).

Attention resolutions are given as *downsample rates* ``ds`` (as in ``UNetModel``); the
checkpoint-style configs in :data:`ADM_CONFIGS` give them as resolutions (``"32,16,8"``) and
:func:`adm_from_config` converts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DiffinvError

#: what the released 256x256 checkpoints share (guided-diffusion's ``create_model`` vocabulary)
_ADM256 = {
    "image_size": 256,
    "channel_mult": (1, 1, 2, 2, 4, 4),
    "num_heads": 4,
    "num_head_channels": 64,
    "num_heads_upsample": -1,
    "resblock_updown": True,
    "use_scale_shift_norm": True,
    "learn_sigma": True,
    "class_cond": False,
    "use_new_attention_order": False,
    "dropout": 0.0,
    "in_channels": 3,
}

#: Settings of the released checkpoints, in guided-diffusion's ``create_model`` vocabulary.
ADM_CONFIGS: dict[str, dict] = {
    # guided-diffusion 256x256_diffusion_uncond.pt (ImageNet, unconditional), used by DDNM/DDRM/PiGDM.
    "imagenet256-uncond": {
        **_ADM256,
        "num_channels": 256,
        "num_res_blocks": 2,
        "attention_resolutions": "32,16,8",
    },
    # DPS's ffhq_10m.pt (FFHQ 256, unconditional).
    "ffhq256": {**_ADM256, "num_channels": 128, "num_res_blocks": 1, "attention_resolutions": "16"},
}

#: file name (stem) of a released checkpoint -> key of :data:`ADM_CONFIGS`.
ADM_CHECKPOINT_NAMES: dict[str, str] = {
    "256x256_diffusion_uncond": "imagenet256-uncond",
    "ffhq_10m": "ffhq256",
}


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos(t f_k), sin(t f_k)], f_k = max_period^(-k/half), k < half (float32)."""
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / half)
    ang = t.reshape(-1, 1).float() * freqs.reshape(1, -1)
    emb = torch.cat([ang.cos(), ang.sin()], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm evaluated in float32 and cast back (as ADM does for fp16 stability)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = torch.promote_types(torch.float32, self.weight.dtype)
        w, b = self.weight.to(dt), self.bias.to(dt)
        return F.group_norm(x.to(dt), self.num_groups, w, b, self.eps).to(x.dtype)


def _norm(channels: int, groups: int) -> GroupNorm32:
    return GroupNorm32(min(groups, channels), channels)


class _EmbModule(nn.Module):
    """Marker: a module whose forward takes (x, emb)."""


class _EmbSequential(nn.Sequential):
    """nn.Sequential that passes the time embedding to the children that take it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, _EmbModule) else layer(x)
        return x


class _Resample(nn.Module):
    """2x nearest up-sampling or 2x2 average-pool down-sampling, without parameters."""

    def __init__(self, up: bool):
        super().__init__()
        self.up = up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class Upsample(nn.Module):
    """Nearest 2x up-sampling followed by a 3x3 conv (``conv``), used without ``resblock_updown``."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Strided 3x3 conv (``op``) or 2x2 average pooling, used without ``resblock_updown``."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1)
        else:
            self.op = nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(_EmbModule):
    """Residual block with time-embedding injection (FiLM "scale-shift" norm or addition).

    With ``up``/``down`` the block also resamples: the hidden path after its first norm+SiLU,
    the skip path before the skip connection.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float = 0.0,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
        norm_groups: int = 32,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            _norm(channels, norm_groups), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if self.updown:
            self.h_upd: nn.Module = _Resample(up)
            self.x_upd: nn.Module = _Resample(up)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        emb_out = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            _norm(out_channels, norm_groups),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.updown:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            for layer in self.out_layers[1:]:
                h = layer(h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the spatial positions.

    ``legacy_order=True`` (ADM's ``QKVAttentionLegacy``, the released checkpoints): the qkv
    channels are grouped by head first, i.e. viewed as (heads, 3, ch); otherwise (3, heads, ch).
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        legacy_order: bool = True,
        norm_groups: int = 32,
    ):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise DiffinvError(
                    f"channels {channels} not divisible by num_head_channels {num_head_channels}"
                )
            self.num_heads = channels // num_head_channels
        self.legacy_order = legacy_order
        self.norm = _norm(channels, norm_groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        L = flat.shape[-1]
        qkv = self.qkv(self.norm(flat))
        nh = self.num_heads
        ch = c // nh
        if self.legacy_order:
            q, k, v = qkv.reshape(b * nh, 3 * ch, L).split(ch, dim=1)
        else:
            q, k, v = (z.reshape(b * nh, ch, L) for z in qkv.chunk(3, dim=1))
        s = ch**-0.25  # split 1/sqrt(ch) between q and k
        w = torch.einsum("bct,bcs->bts", q * s, k * s)
        w = torch.softmax(w.float(), dim=-1).to(w.dtype)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, L)
        return (flat + self.proj_out(a)).reshape(b, c, *spatial)


class ADMUNet(nn.Module):
    """The ADM UNet (``UNetModel`` of guided-diffusion), ``forward(x, t, y=None) -> (B, out, H, W)``.

    Parameters follow ``UNetModel``; ``attention_resolutions`` are downsample rates. ``t`` are
    the integer diffusion steps (float allowed). ``y``: class labels for class-conditional models.
    ``norm_groups`` (32 in all released models) may be lowered for tiny test networks.
    Learned-sigma models (``out_channels = 2 * in_channels``) output [eps, variance interpolation].
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        num_classes: int | None = None,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        norm_groups: int = 32,
    ):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.image_size = int(image_size)
        self.in_channels = int(in_channels)
        self.model_channels = int(model_channels)
        self.out_channels = int(out_channels)
        self.num_classes = num_classes
        attention_resolutions = {int(a) for a in attention_resolutions}
        emb_dim = 4 * model_channels

        def res(ch_in, ch_out=None, up=False, down=False):
            return ResBlock(
                ch_in,
                emb_dim,
                dropout,
                ch_out,
                use_scale_shift_norm,
                up=up,
                down=down,
                norm_groups=norm_groups,
            )

        def attn(ch, heads):
            return AttentionBlock(ch, heads, num_head_channels, not use_new_attention_order, norm_groups)

        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        ch = first_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([_EmbSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            width = int(mult * model_channels)
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, width)]
                ch = width
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(_EmbSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample, ch)
                self.input_blocks.append(_EmbSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = _EmbSequential(res(ch), attn(ch, num_heads), res(ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            width = int(mult * model_channels)
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), width)]
                ch = width
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(
                        res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample, ch)
                    )
                    ds //= 2
                self.output_blocks.append(_EmbSequential(*layers))

        self.out = nn.Sequential(
            _norm(ch, norm_groups), nn.SiLU(), nn.Conv2d(first_ch, out_channels, 3, padding=1)
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.out[2].weight.dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if (y is None) != (self.num_classes is None):
            raise DiffinvError("pass class labels y if and only if the model is class-conditional")
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(self.dtype))
        if y is not None:
            emb = emb + self.label_emb(y)
        h = x.to(self.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


def _parse_ints(v) -> tuple[int, ...]:
    if isinstance(v, str):
        return tuple(int(s) for s in v.split(",") if s.strip())
    if isinstance(v, int):
        return (v,)
    return tuple(int(s) for s in v)


def adm_from_config(config: str | dict, **overrides) -> ADMUNet:
    """Build an :class:`ADMUNet` from a name in :data:`ADM_CONFIGS` or a ``create_model``-style dict.

    Keys (guided-diffusion names): image_size, num_channels, num_res_blocks, channel_mult
    (tuple or "1,1,2,2,4,4"), attention_resolutions (resolutions, e.g. "32,16,8"), num_heads,
    num_head_channels, num_heads_upsample, resblock_updown, use_scale_shift_norm, learn_sigma,
    class_cond (num_classes, default 1000), use_new_attention_order, dropout, in_channels,
    norm_groups. ``overrides`` update the dict.
    """
    if isinstance(config, str):
        if config not in ADM_CONFIGS:
            raise DiffinvError(f"unknown ADM config {config!r}; known: {', '.join(ADM_CONFIGS)}")
        config = ADM_CONFIGS[config]
    cfg = {**config, **overrides}
    known = {
        "image_size", "num_channels", "num_res_blocks", "channel_mult", "attention_resolutions",
        "num_heads", "num_head_channels", "num_heads_upsample", "resblock_updown",
        "use_scale_shift_norm", "learn_sigma", "class_cond", "num_classes", "use_new_attention_order",
        "dropout", "in_channels", "norm_groups", "use_fp16", "use_checkpoint", "conv_resample",
    }  # fmt: skip
    unknown = set(cfg) - known
    if unknown:
        raise DiffinvError(f"unknown ADM config keys: {sorted(unknown)}")
    size = int(cfg["image_size"])
    in_ch = int(cfg.get("in_channels", 3))
    ds = []
    for r in _parse_ints(cfg.get("attention_resolutions", "16")):
        if size % r:
            raise DiffinvError(f"attention resolution {r} does not divide image_size {size}")
        ds.append(size // r)
    mult = cfg["channel_mult"]
    mult = tuple(float(m) for m in mult.split(",")) if isinstance(mult, str) else tuple(mult)
    return ADMUNet(
        image_size=size,
        in_channels=in_ch,
        model_channels=int(cfg["num_channels"]),
        out_channels=2 * in_ch if cfg.get("learn_sigma", False) else in_ch,
        num_res_blocks=int(cfg["num_res_blocks"]),
        attention_resolutions=ds,
        dropout=float(cfg.get("dropout", 0.0)),
        channel_mult=mult,
        conv_resample=bool(cfg.get("conv_resample", True)),
        num_classes=int(cfg.get("num_classes", 1000)) if cfg.get("class_cond", False) else None,
        num_heads=int(cfg.get("num_heads", 1)),
        num_head_channels=int(cfg.get("num_head_channels", -1)),
        num_heads_upsample=int(cfg.get("num_heads_upsample", -1)),
        use_scale_shift_norm=bool(cfg.get("use_scale_shift_norm", False)),
        resblock_updown=bool(cfg.get("resblock_updown", False)),
        use_new_attention_order=bool(cfg.get("use_new_attention_order", False)),
        norm_groups=int(cfg.get("norm_groups", 32)),
    )
