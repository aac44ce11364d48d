"""priors.load: diffusers folders, ADM files, hub ids offline, shipped names, and every error path."""

from __future__ import annotations

import json
import time

import pytest
import torch

from diffinv import priors
from diffinv.priors import CheckpointError, VESchedule, VPSchedule, loading


def _save_vp_folder(net, folder, layout="subfolders", scheduler=None):
    from diffusers import DDPMScheduler

    scheduler = scheduler or DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    if layout == "subfolders":
        net.save_pretrained(folder / "unet")
        scheduler.save_pretrained(folder / "scheduler")
    else:
        net.save_pretrained(folder)
        scheduler.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("layout", ["subfolders", "root"])
def test_diffusers_vp_folder_roundtrip(tmp_path, tiny_unet, layout):
    net = tiny_unet()
    folder = _save_vp_folder(net, tmp_path / "model", layout)
    prior = priors.load(folder)
    assert isinstance(prior, priors.NetworkPrior) and not prior.is_ve
    assert (prior.scale, prior.shift) == (0.5, 0.5)
    assert torch.allclose(prior.schedule.betas, VPSchedule.linear(1000).betas)
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([1, 600])
    with torch.no_grad():
        ref = net(x, t).sample
    assert torch.equal(prior.eps(x, t), ref)
    assert not prior.net.training


def test_load_device_dtype(tmp_path, tiny_unet):
    folder = _save_vp_folder(tiny_unet(), tmp_path / "m")
    prior = priors.load(str(folder), device="cpu", dtype=torch.float64)
    assert next(prior.net.parameters()).dtype == torch.float64
    assert prior.eps(torch.randn(1, 3, 16, 16), 3).dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
        dict(beta_schedule="linear", beta_start=2e-4, beta_end=0.03, num_train_timesteps=500),
        dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        dict(beta_schedule="squaredcos_cap_v2"),
        dict(trained_betas=[0.01, 0.02, 0.05, 0.1]),
    ],
)
@pytest.mark.parametrize("cls", ["DDPMScheduler", "DDIMScheduler"])
def test_scheduler_configs_match_diffusers_betas(kwargs, cls):
    import diffusers

    sch = getattr(diffusers, cls)(**kwargs)
    sched = priors.schedule_from_scheduler_config(dict(sch.config, _class_name=cls))
    assert sched.T == len(sch.betas)
    assert torch.allclose(sched.betas, sch.betas.double(), rtol=1e-5, atol=1e-7)
    assert torch.allclose(sched.alphas_cumprod, sch.alphas_cumprod.double(), rtol=1e-4, atol=1e-7)


def test_unsupported_scheduler():
    with pytest.raises(CheckpointError, match="unsupported scheduler"):
        priors.schedule_from_scheduler_config({"_class_name": "KarrasVeScheduler"})
    with pytest.raises(CheckpointError, match="beta_schedule"):
        priors.schedule_from_scheduler_config({"_class_name": "DDPMScheduler", "beta_schedule": "sigmoid"})


def _save_ve_folder(net, folder, N=100):
    from diffusers import ScoreSdeVeScheduler

    net.save_pretrained(folder / "unet")
    ScoreSdeVeScheduler(num_train_timesteps=N, sigma_min=0.01, sigma_max=50.0).save_pretrained(
        folder / "scheduler"
    )
    return folder


def test_diffusers_ve_folder(tmp_path, tiny_unet):
    net = tiny_unet(fourier=True)
    prior = priors.load(_save_ve_folder(net, tmp_path / "ve"))
    assert prior.is_ve
    assert (prior.ve_schedule.sigma_min, prior.ve_schedule.sigma_max, prior.ve_schedule.N) == (
        0.01,
        50.0,
        100,
    )
    assert (prior.scale, prior.shift) == (1.0, 0.0)  # score-SDE VE models: data in [0, 1]
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([0, 99])
    sig = prior.ve_schedule.sigmas[t].float()
    with torch.no_grad():
        ref = net(x, sig).sample
    assert torch.allclose(prior.score_ve(x, t), ref, atol=1e-6)
    # data range override
    assert priors.load(tmp_path / "ve", data_range=(-1, 1)).scale == 0.5


def test_ve_scheduler_with_positional_unet_is_rejected(tmp_path, tiny_unet):
    with pytest.raises(CheckpointError, match="disagree"):
        priors.load(_save_ve_folder(tiny_unet(), tmp_path / "x"))


def test_pickled_bin_folder_refused(tmp_path, tiny_unet):
    from diffusers import DDPMScheduler

    net = tiny_unet()
    net.save_pretrained(tmp_path / "m", safe_serialization=False)
    DDPMScheduler().save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "diffusion_pytorch_model.bin").exists()
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        priors.load(tmp_path / "m")


def test_truncated_safetensors_in_folder(tmp_path, tiny_unet):
    folder = _save_vp_folder(tiny_unet(), tmp_path / "m")
    w = folder / "unet" / "diffusion_pytorch_model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated safetensors") as ei:
        priors.load(folder)
    assert "\n" not in str(ei.value)


def test_weights_not_matching_config(tmp_path, tiny_unet):
    folder = _save_vp_folder(tiny_unet(), tmp_path / "m")
    cfg_path = folder / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["layers_per_block"] = 2
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match config.json: .*size mismatch"):
        priors.load(folder)


def test_weights_with_missing_and_extra_keys(tmp_path, tiny_unet):
    from safetensors.torch import load_file, save_file

    folder = _save_vp_folder(tiny_unet(), tmp_path / "m")
    w = folder / "unet" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(w))
    del sd["conv_out.bias"]
    sd["bogus.weight"] = torch.zeros(3)
    save_file(sd, str(w))
    with pytest.raises(CheckpointError, match="do not match config.json: missing keys: conv_out.bias") as ei:
        priors.load(folder)
    assert "bogus.weight" in str(ei.value)


def test_missing_scheduler_and_not_a_model(tmp_path, tiny_unet):
    tiny_unet().save_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match="no scheduler config"):
        priors.load(tmp_path / "m")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a diffusers model folder"):
        priors.load(tmp_path / "empty")


def test_hub_id_offline_fails_fast_with_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.raises(CheckpointError) as ei:
        priors.load("google/ddpm-celebahq-256-not-cached-test")
    msg = str(ei.value)
    assert time.monotonic() - t0 < 20
    assert "huggingface-cli download google/ddpm-celebahq-256-not-cached-test --local-dir DIR" in msg
    assert "priors.load(DIR)" in msg and "\n" not in msg


def test_hub_id_uses_snapshot_download(monkeypatch, tmp_path, tiny_unet):
    # online path, with snapshot_download replaced by a local copy
    folder = _save_vp_folder(tiny_unet(), tmp_path / "snap")
    calls = []

    def fake(repo_id, **kw):
        calls.append((repo_id, kw))
        return str(folder)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    prior = priors.load("google/ddpm-ema-church-256")
    assert isinstance(prior, priors.NetworkPrior)
    assert calls[0][0] == "google/ddpm-ema-church-256"
    assert "*.safetensors" in calls[0][1]["allow_patterns"]


class _Payload:
    """Unpickling this object calls open(marker, "w"), i.e. runs code that creates a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_with_code_payload_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "256x256_diffusion_uncond.pt"
    torch.save({"time_embed.0.weight": torch.zeros(2), "evil": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused to load .* for safety") as ei:
        priors.load(path)
    assert "\n" not in str(ei.value)
    assert not marker.exists()
    # sanity: the payload is live - an unsafe load would have run it
    marker2 = tmp_path / "PWNED2"
    torch.save({"evil": _Payload(marker2)}, tmp_path / "live.pt")
    torch.load(tmp_path / "live.pt", weights_only=False)
    assert marker2.exists()


@pytest.mark.parametrize("kind", ["random", "truncated_pt", "truncated_safetensors", "not_a_state_dict"])
def test_corrupt_checkpoint_files(tmp_path, tiny_adm, tiny_adm_config, kind):
    sd = tiny_adm().state_dict()
    if kind == "random":
        path = tmp_path / "model.pt"
        rand = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
        path.write_bytes(b"\x00" + rand.numpy().tobytes())
    elif kind == "truncated_pt":
        path = tmp_path / "model.pt"
        torch.save(sd, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "truncated_safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path = tmp_path / "model.pt"
        torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError) as ei:
        priors.load(path, config=tiny_adm_config)
    msg = str(ei.value)
    assert "\n" not in msg
    assert ("corrupt" in msg or "truncated" in msg) if kind != "not_a_state_dict" else "state dict" in msg
    assert "safety" not in msg  # broken files are not mistaken for malicious ones


def test_missing_paths_and_unknown_names(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        priors.load(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        priors.load("./not/here")
    with pytest.raises(ValueError, match="unknown prior 'no-such-prior'.*shipped priors.*hub id"):
        priors.load("no-such-prior")
    with pytest.raises(CheckpointError, match="unsupported checkpoint file"):
        (tmp_path / "weights.npz").write_bytes(b"x")
        priors.load(tmp_path / "weights.npz")
    assert issubclass(CheckpointError, ValueError)


def test_shipped_priors_lookup(tmp_path, tiny_unet, monkeypatch):
    assets = tmp_path / "assets"
    monkeypatch.setattr(loading, "ASSETS_DIR", assets)
    assert priors.shipped_priors() == []
    net = tiny_unet()
    _save_vp_folder(net, assets / "toy-16")
    (assets / "toy-16" / "diffinv.json").write_text(json.dumps({"data_range": [0, 1]}))
    (assets / "__pycache__").mkdir()
    assert priors.shipped_priors() == ["toy-16"]
    prior = priors.load("toy-16")
    assert (prior.scale, prior.shift) == (1.0, 0.0)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        # same weights, loaded through another path: equal to float32 rounding (kernels may differ)
        torch.testing.assert_close(prior.eps(x, 3), net(x, torch.tensor([3])).sample, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="shipped priors: toy-16"):
        priors.load("ct-ellipses-64")


def test_ve_schedule_type_from_config():
    s = priors.schedule_from_scheduler_config(
        {
            "_class_name": "ScoreSdeVeScheduler",
            "sigma_min": 0.01,
            "sigma_max": 348.0,
            "num_train_timesteps": 2000,
        }
    )
    assert isinstance(s, VESchedule) and s.N == 2000 and s.sigma_max == 348.0


@pytest.mark.parametrize(
    "kind, message",
    [
        ("raw_pickle_p2", "for safety"),
        ("raw_pickle_p4", "raw Python pickle"),
        ("raw_pickle_p5", "raw Python pickle"),
        ("raw_pickle_p5_plain", "raw Python pickle"),
        ("empty", "corrupt or truncated"),
        ("text", "corrupt"),
    ],
)
def test_every_unloadable_checkpoint_is_one_line_with_no_warning(tmp_path, kind, message):
    import pickle
    import warnings

    marker = tmp_path / "PWNED"
    path = tmp_path / "ckpt.pt"
    if kind.startswith("raw_pickle"):
        payload = {"w": [1, 2]} if kind.endswith("plain") else {"w": _Payload(marker)}
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=int(kind[len("raw_pickle_p")]))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_text("this is not a checkpoint\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match=message) as ei:
            priors.load(path)
    assert [str(w.message) for w in caught] == []  # nothing leaks to stderr beside the one line
    assert "\n" not in str(ei.value) and not marker.exists()
    if kind.startswith("raw_pickle"):
        assert "accepted: torch.save state dicts" in str(ei.value)
