"""ADM UNet: state-dict key layout of the released guided-diffusion checkpoints, save/reload."""

from __future__ import annotations

import pytest
import torch

from diffinv import priors
from diffinv.priors import ADM_CONFIGS, adm_from_config


def expected_layout(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a guided-diffusion ``UNetModel`` state dict, derived from its layout rules
    (independently of :mod:`diffinv.priors.adm`):

    time_embed.{0,2} Linear; input_blocks.0.0 Conv; per level: num_res_blocks x [ResBlock,
    (Attention if the resolution is listed)], then (not on the last level) a down ResBlock;
    middle_block = ResBlock, Attention, ResBlock; output_blocks per level reversed:
    (num_res_blocks + 1) x [ResBlock(ch + skip), (Attention), (up ResBlock on the last one of
    every level but level 0)]; out.{0 norm, 2 conv}. ResBlock: in_layers.{0,2}, emb_layers.1
    (2*out with scale-shift norm), out_layers.{0,3}, skip_connection iff width changes.
    Attention: norm, qkv (Conv1d C->3C), proj_out (Conv1d).
    """
    size, C, nrb = cfg["image_size"], cfg["num_channels"], cfg["num_res_blocks"]
    mult = tuple(cfg["channel_mult"])
    attn_res = {int(r) for r in str(cfg["attention_resolutions"]).split(",")}
    in_ch = cfg.get("in_channels", 3)
    out_ch = 2 * in_ch if cfg["learn_sigma"] else in_ch
    E = 4 * C
    keys: dict[str, tuple[int, ...]] = {}

    def wb(p, w, b):
        keys[p + ".weight"], keys[p + ".bias"] = w, b

    def res(p, i, o):
        wb(p + ".in_layers.0", (i,), (i,))
        wb(p + ".in_layers.2", (o, i, 3, 3), (o,))
        wb(p + ".emb_layers.1", (2 * o, E), (2 * o,))
        wb(p + ".out_layers.0", (o,), (o,))
        wb(p + ".out_layers.3", (o, o, 3, 3), (o,))
        if i != o:
            wb(p + ".skip_connection", (o, i, 1, 1), (o,))

    def att(p, c):
        wb(p + ".norm", (c,), (c,))
        wb(p + ".qkv", (3 * c, c, 1), (3 * c,))
        wb(p + ".proj_out", (c, c, 1), (c,))

    wb("time_embed.0", (E, C), (E,))
    wb("time_embed.2", (E, E), (E,))
    wb("input_blocks.0.0", (C * mult[0], in_ch, 3, 3), (C * mult[0],))
    ch, res_now, n, skips = C * mult[0], size, 1, [C * mult[0]]
    for lvl, m in enumerate(mult):
        for _ in range(nrb):
            res(f"input_blocks.{n}.0", ch, C * m)
            ch = C * m
            if res_now in attn_res:
                att(f"input_blocks.{n}.1", ch)
            skips.append(ch)
            n += 1
        if lvl < len(mult) - 1:
            res(f"input_blocks.{n}.0", ch, ch)
            skips.append(ch)
            n += 1
            res_now //= 2
    res("middle_block.0", ch, ch)
    att("middle_block.1", ch)
    res("middle_block.2", ch, ch)
    n = 0
    for lvl in reversed(range(len(mult))):
        for i in range(nrb + 1):
            res(f"output_blocks.{n}.0", ch + skips.pop(), C * mult[lvl])
            ch = C * mult[lvl]
            j = 1
            if res_now in attn_res:
                att(f"output_blocks.{n}.1", ch)
                j = 2
            if lvl and i == nrb:
                res(f"output_blocks.{n}.{j}", ch, ch)
                res_now *= 2
            n += 1
    wb("out.0", (ch,), (ch,))
    wb("out.2", (out_ch, C * mult[0], 3, 3), (out_ch,))
    return keys


def _shapes(net) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.parametrize("name", list(ADM_CONFIGS))
def test_released_configs_key_layout(name):
    # built on the meta device: no memory for the 553M / 94M parameters
    with torch.device("meta"):
        net = adm_from_config(name)
    assert _shapes(net) == expected_layout(ADM_CONFIGS[name])
    n_params = sum(p.numel() for p in net.parameters())
    # 256x256_diffusion_uncond.pt is ~2.2 GB in float32, ffhq_10m.pt ~357 MiB
    expected_m = {"imagenet256-uncond": 552.8, "ffhq256": 93.6}[name]
    assert abs(n_params / 1e6 - expected_m) < 0.1
    sd = net.state_dict()
    for k in ("time_embed.0.weight", "input_blocks.0.0.weight", "out.0.weight", "out.2.weight",
              "middle_block.1.qkv.weight", "middle_block.2.out_layers.3.weight"):  # fmt: skip
        assert k in sd
    assert sd["out.2.weight"].shape[0] == 6  # learned sigma


def test_specific_keys_imagenet():
    with torch.device("meta"):
        sd = adm_from_config("imagenet256-uncond").state_dict()
    # level 0 -> 1 downsampling resblock, attention at 32x32 (level 3), qkv as Conv1d
    assert sd["input_blocks.3.0.in_layers.2.weight"].shape == (256, 256, 3, 3)
    assert "input_blocks.3.0.skip_connection.weight" not in sd
    assert sd["input_blocks.10.1.qkv.weight"].shape == (1536, 512, 1)
    assert sd["input_blocks.7.0.skip_connection.weight"].shape == (512, 256, 1, 1)
    assert sd["output_blocks.17.0.skip_connection.weight"].shape == (256, 512, 1, 1)
    assert sd["input_blocks.1.0.emb_layers.1.weight"].shape == (512, 1024)
    assert len(sd) == len(expected_layout(ADM_CONFIGS["imagenet256-uncond"]))


@pytest.mark.parametrize(
    "overrides",
    [{}, {"resblock_updown": False, "use_scale_shift_norm": True}, {"use_new_attention_order": True}],
)
def test_tiny_adm_forward_and_layout(tiny_adm, tiny_adm_config, overrides):
    net = tiny_adm(**overrides)
    x = torch.randn(2, 3, 16, 16)
    out = net(x, torch.tensor([3, 700]))
    assert out.shape == (2, 6, 16, 16) and torch.isfinite(out).all()
    if not overrides:
        assert _shapes(net) == expected_layout(tiny_adm_config)
    # timesteps matter
    assert not torch.allclose(out, net(x, torch.tensor([500, 10])))


def test_attention_orders_differ_only_in_grouping(tiny_adm):
    net = tiny_adm()
    other = tiny_adm(use_new_attention_order=True)
    other.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(1, 3, 16, 16)
    assert not torch.allclose(net(x, torch.tensor([5])), other(x, torch.tensor([5])))


def test_class_conditional(tiny_adm):
    net = tiny_adm(class_cond=True, num_classes=10)
    assert net.state_dict()["label_emb.weight"].shape == (10, 64)
    x = torch.randn(2, 3, 16, 16)
    a = net(x, torch.tensor([5, 5]), y=torch.tensor([0, 1]))
    assert not torch.allclose(a[0], a[1])
    with pytest.raises(ValueError):
        net(x, torch.tensor([5, 5]))
    prior = priors.NetworkPrior(net, priors.VPSchedule.linear(1000), class_labels=3)
    assert prior.eps(x, 5).shape == x.shape


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_adm_save_reload_through_load(tmp_path, tiny_adm, tiny_adm_config, fmt):
    net = tiny_adm()
    path = tmp_path / f"tiny_adm.{fmt}"
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    if fmt == "pt":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file(sd, str(path))
    prior = priors.load(path, config=tiny_adm_config)
    assert isinstance(prior.net, priors.ADMUNet)
    assert prior.scale == 0.5 and prior.shift == 0.5
    assert prior.schedule.T == 1000
    assert torch.allclose(prior.schedule.betas, priors.VPSchedule.linear(1000).betas)
    ref = priors.NetworkPrior(net, priors.VPSchedule.linear(1000))
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([10, 900])
    assert torch.equal(prior.eps(x, t), ref.eps(x, t))
    # learned-sigma: the eps half of the output
    assert torch.equal(prior.eps(x, t), net(x, t)[:, :3])
    assert prior.nfe == 2


def test_adm_fp16_file_loads_as_float32(tmp_path, tiny_adm, tiny_adm_config):
    net = tiny_adm()
    path = tmp_path / "half.pt"
    torch.save({k: v.half() for k, v in net.state_dict().items()}, path)
    prior = priors.load(path, config=tiny_adm_config)
    assert prior.net.dtype == torch.float32
    prior64 = priors.load(path, config=tiny_adm_config, dtype=torch.float64)
    assert prior64.net.dtype == torch.float64
    x = torch.randn(1, 3, 16, 16)
    assert prior64.eps(x, 3).dtype == torch.float32  # output follows the input


def test_adm_config_needed_or_mismatch(tmp_path, tiny_adm, tiny_adm_config):
    net = tiny_adm()
    p = tmp_path / "mystery.pt"
    torch.save(net.state_dict(), p)
    with pytest.raises(priors.CheckpointError, match="config="):
        priors.load(p)
    # name says FFHQ but the weights are tiny: strict mismatch, listed keys
    p2 = tmp_path / "ffhq_10m.pt"
    torch.save(net.state_dict(), p2)
    with pytest.raises(
        priors.CheckpointError, match=r"does not match ADM ffhq256: missing keys: .*input_blocks"
    ):
        priors.load(p2)
    # a wrong explicit config
    with pytest.raises(priors.CheckpointError, match="unexpected keys|missing keys|mismatched"):
        priors.load(p, config={**tiny_adm_config, "num_res_blocks": 2})
    bad = dict(net.state_dict())
    bad["extra.weight"] = torch.zeros(1)
    del bad["out.2.bias"]
    p3 = tmp_path / "bad.pt"
    torch.save(bad, p3)
    with pytest.raises(priors.CheckpointError) as ei:
        priors.load(p3, config=tiny_adm_config)
    msg = str(ei.value)
    assert "out.2.bias" in msg and "extra.weight" in msg and "\n" not in msg


def test_adm_config_inferred_from_shapes(tmp_path, tiny_adm, tiny_adm_config, monkeypatch):
    from diffinv.priors import adm as adm_mod

    monkeypatch.setitem(adm_mod.ADM_CONFIGS, "tiny-test", tiny_adm_config)
    net = tiny_adm()
    p = tmp_path / "whatever.pt"
    torch.save(net.state_dict(), p)
    prior = priors.load(p)
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(prior.eps(x, 4), net(x, torch.tensor([4]))[:, :3])
