"""One GPU training run for issue 12 (driver; the training itself is diffinv.train)."""

import json
import sys
import time

import torch

from diffinv.train import TrainConfig, train

name, data, channels, blocks, batch, lr, init = sys.argv[1:8]
resume = len(sys.argv) > 8
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
torch.backends.cudnn.benchmark = True
cfg = TrainConfig(
    data=data,
    out=f"/tmp/runs/{name}",
    size=64,
    channels=int(channels),
    steps=10**7,
    batch=int(batch),
    lr=float(lr),
    device="cuda" if torch.cuda.is_available() else "cpu",
    checkpoint_minutes=3.0,
    sample_every=0,
    sample_count=16,
    sample_steps=50,
    block_out_channels=tuple(int(c) for c in blocks.split(",")),
    init_from=init,
    quiet=True,
    name=name,
    notes={"run": f"GPU session of 2026-12-04, issue 12; init_from={init or 'random'}"},
)
t0 = time.time()
summary = train(cfg, resume=resume)
summary["wall_s"] = time.time() - t0
summary["img_per_s"] = summary["images_seen"] / max(summary["seconds"], 1e-9)
summary["config"] = {"blocks": blocks, "batch": int(batch), "lr": float(lr), "init_from": init}
json.dump(summary, open(f"/tmp/runs/{name}/summary.json", "w"), indent=1)
print(name, json.dumps(summary))
