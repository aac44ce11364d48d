"""Test-time adaptation of a prior's network: which weights train, and their restoration afterwards.

``adapted(net, mode)`` is a context manager that yields the tensors an optimiser may change and
leaves the network exactly as it found it on exit (even after an exception):

- ``"full"``: every floating-point parameter of the network trains (DDIP's reading of SCD as a deep
  image prior); the weights are copied on entry and copied back on exit.
- ``"lora"``: low-rank adapters (Hu et al. 2021, LoRA) beside every ``nn.Conv2d`` (groups = 1, zero padding) and
  ``nn.Linear``: the layer computes ``W x + B (A x)`` with ``A`` of rank ``rank`` (for a convolution,
  ``A`` is a convolution with the layer's kernel, stride, padding and dilation into ``rank`` channels,
  ``B`` a 1x1 convolution out of them). ``B`` starts at zero, so the adapted network starts as the
  trained one; ``A`` is uniform in +-1/sqrt(fan_in), drawn from ``seed``. The adapters are forward
  hooks, removed on exit; the network's own weights are frozen meanwhile.

Example
-------
>>> with adapted(prior.net, "full") as params:                      # doctest: +SKIP
...     opt = torch.optim.Adam(params, lr=3e-4)
...     ...  # the network is restored when the block ends
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DiffinvError

ADAPTER_MODES = ("full", "lora")


def check_adapter(mode, rank) -> None:
    """One-line errors for an unknown ``mode`` or a ``rank`` that is not a positive integer."""
    if mode not in ADAPTER_MODES:
        raise DiffinvError(f"adapter must be one of {', '.join(ADAPTER_MODES)}, got {mode!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise DiffinvError(f"lora_rank must be a positive integer, got {rank!r}")


@contextmanager
def adapted(net: nn.Module, mode: str = "full", rank: int = 4, seed: int = 0) -> Iterator[list[torch.Tensor]]:
    """Yield the trainable tensors of ``net`` for ``mode`` ("full" or "lora"); restore ``net`` on exit."""
    check_adapter(mode, rank)
    params = [p for p in net.parameters() if p.is_floating_point()]
    if not params:
        raise DiffinvError("the prior's network has no floating-point parameters to adapt")
    flags = [p.requires_grad for p in params]
    saved = [p.detach().clone() for p in params] if mode == "full" else None
    handles = []
    try:
        for p in params:
            p.requires_grad_(mode == "full")
        if mode == "full":
            yield params
        else:
            generator = torch.Generator().manual_seed(int(seed))
            trainable: list[torch.Tensor] = []
            for layer in net.modules():
                pair = _lora_pair(layer, rank, generator)
                if pair is not None:
                    trainable += pair
                    handles.append(layer.register_forward_hook(_lora_hook(*pair)))
            if not trainable:
                raise DiffinvError("the prior's network has no Conv2d / Linear layer for LoRA adapters")
            yield trainable
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for p, flag, old in zip(params, flags, saved or [None] * len(params)):
                if old is not None:
                    p.copy_(old)
                p.requires_grad_(flag)


def _lora_pair(layer: nn.Module, rank: int, generator: torch.Generator) -> list[torch.Tensor] | None:
    """``[A, B]`` for a Conv2d (groups 1) or Linear layer, in its weight's dtype/device; else None."""
    if isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer.padding_mode == "zeros":
        fan_in = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
        a_shape, b_shape = (rank, layer.in_channels, *layer.kernel_size), (layer.out_channels, rank, 1, 1)
    elif isinstance(layer, nn.Linear):
        fan_in = layer.in_features
        a_shape, b_shape = (rank, layer.in_features), (layer.out_features, rank)
    else:
        return None
    w = layer.weight
    bound = 1.0 / math.sqrt(fan_in)
    a = (torch.rand(a_shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    a = a.to(device=w.device, dtype=w.dtype).requires_grad_(True)
    b = torch.zeros(b_shape, device=w.device, dtype=w.dtype, requires_grad=True)
    return [a, b]


def _lora_hook(a: torch.Tensor, b: torch.Tensor):
    def hook(layer: nn.Module, inputs, out):
        x = inputs[0]
        if isinstance(layer, nn.Conv2d):
            low = F.conv2d(x, a, None, layer.stride, layer.padding, layer.dilation)
            return out + F.conv2d(low, b)
        return out + (x @ a.T) @ b.T

    return hook
