"""The commands of ``diffinv`` (:mod:`diffinv.cli` parses; each ``_cmd_<name>`` here validates its
arguments, calls the library and reports). No torch at module level: see :mod:`diffinv.cli`."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path

from .cli_errors import CLIError, _one_line


def _check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise CLIError(f"--threads must be >= 1, got {threads}")


@contextlib.contextmanager
def _threads(threads: int | None):
    """Run the body with ``--threads`` torch threads (when given), then restore the setting."""
    import torch

    _check_threads(threads)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _from_args(args: argparse.Namespace, *names: str) -> dict:
    """``{name: args.name}`` for the options a library function takes under the same names."""
    return {name: getattr(args, name) for name in names}


def _check_device(name: str):
    """``--device``: refused (one line) when unknown or not available here."""
    from .preflight import check_device

    return check_device(name)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .preflight import check_output_dir

    check_output_dir(args.out)  # before the priors are loaded and the minutes of restorations
    if args.steps is not None and args.steps < 1:
        raise CLIError(f"--steps must be >= 1, got {args.steps}")
    _check_threads(args.threads)
    _check_device(args.device)
    from .demo import run_demo

    with _threads(args.threads):
        run_demo(**_from_args(args, "out", "seed", "quiet", "steps", "fast", "device", "threads"))
    return 0


def _init_from(value: str | None) -> str:
    """``--init-from``: a diffusers folder, else the name of a shipped prior ("" when not given)."""
    if not value:
        return ""
    if Path(value).exists():
        return value
    from .priors.loading import ASSETS_DIR, shipped_priors  # (imports torch: only when needed)

    if value in shipped_priors():
        return str(ASSETS_DIR / value)
    raise CLIError(
        f"--init-from {value}: no such folder, nor a shipped prior ({', '.join(shipped_priors()) or 'none'})"
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from .preflight import check_output_dir

    check_output_dir(args.out)
    if args.data != "ellipses" and not Path(args.data).is_dir():
        raise CLIError(f"--data must be an image folder or 'ellipses'; {args.data!r} is not a folder")
    for name in ("steps", "batch"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name} must be >= 1, got {getattr(args, name)}")
    init_from = _init_from(args.init_from)
    from .train import TrainConfig, train

    cfg = TrainConfig(
        **_from_args(
            args, "data", "out", "size", "channels", "steps", "batch", "lr", "seed", "device", "quiet"
        ),
        init_from=init_from,
        window=args.window or "",
        hu_offset=args.hu_offset,
        augment=args.augment or "",
    )
    summary = train(cfg, resume=args.resume)
    print(
        f"trained {summary['steps']} steps ({summary['images_seen']} images) in "
        f"{summary['seconds']:.0f} s, final loss {summary['final_loss']:.4f}; model in {args.out}"
    )
    return 0


def _check_eval_data(data: str) -> None:
    """``--data``: ``ellipses:N`` (its form is checked by evaluate), else an existing folder."""
    if data == "ellipses" or data.startswith("ellipses:"):
        return
    p = Path(data)
    if not p.exists():
        raise CLIError(f"data folder not found: {p}")
    if not p.is_dir():
        raise CLIError(f"data must be an image folder or ellipses:N; {p} is not a folder")


def _cmd_eval(args: argparse.Namespace) -> int:
    import os

    from .catalog import check_method
    from .preflight import check_output_dir

    # not required=True in the parser: a --config file may supply them
    missing = [f"--{k}" for k in ("data", "task", "methods", "out") if getattr(args, k) is None]
    if missing:
        raise CLIError(f"missing required option(s): {', '.join(missing)}")
    # everything that needs no torch first: these fail in milliseconds, not after the prior loads
    check_output_dir(args.out)
    if args.n is not None and args.n < 1:
        raise CLIError(f"--limit must be >= 1, got {args.n}")
    if not math.isfinite(args.sigma_y) or args.sigma_y < 0:
        raise CLIError(f"--sigma-y must be >= 0, got {args.sigma_y}")
    if args.steps is not None and args.steps < 1:
        raise CLIError(f"--steps must be >= 1, got {args.steps}")
    _check_threads(args.threads)
    _check_eval_data(str(args.data))
    methods = args.methods if isinstance(args.methods, list) else str(args.methods).split(",")
    for method in methods:  # (a hand-written --config file may hold a list)
        if str(method).strip():
            check_method(str(method).strip())
    from .evaluate import evaluate

    # One torch thread per process unless --threads: the thread count changes the rounding of
    # sums, and torchrun starts its processes with one thread (OMP_NUM_THREADS=1), so a fixed
    # count makes the results independent of the number of processes.
    with _threads(args.threads):
        summary = evaluate(
            args.data,
            args.task,
            args.methods,
            args.out,
            **_from_args(args, "n", "crop", "sigma_y", "steps", "model", "seed", "device", "overwrite"),
            **_from_args(args, "quiet", "window", "hu_offset", "resize", "samples", "project"),
        )
    if not args.quiet and int(os.environ.get("RANK", "0")) == 0:
        print((Path(args.out) / "results.md").read_text(encoding="utf-8"), end="")
        print(f"{len(summary)} method(s); per-image metrics, images and figures in {args.out}")
    return 0


# ----------------------------------------------------------------------------------- restore
def _cmd_restore(args: argparse.Namespace) -> int:
    from .restore import check_arguments, restore_files  # (torch-free until restore_files runs)

    shared = dict(**_from_args(args, "steps", "sigma_y", "seed", "out", "mask"), params=args.param)
    # the checks that need no torch: a bad --out or a missing file fails in milliseconds
    check_arguments(args.inputs, args.task, args.method, **shared)
    _check_threads(args.threads)
    with _threads(args.threads):
        restore_files(
            args.inputs,
            args.task,
            args.method,
            progress=not args.quiet,
            on_record=None if args.quiet else _print_record,
            extra_config={"threads": args.threads, "quiet": args.quiet},
            warn=_warn_restore,
            slice_index=args.slice,
            **_from_args(args, "model", "measured", "device", "window", "hu_offset", "resize", "tile_batch"),
            **_from_args(args, "samples", "save_samples", "noise", "photons", "measured_kind", "project"),
            **shared,
        )
    return 0


def _warn_restore(message: str) -> None:
    """Legal but suspicious input: one line on stderr, the run goes on."""
    print(f"diffinv restore: warning: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _print_record(rec: dict) -> None:
    m = {k: float(v) for k, v in rec["metrics"].items()}  # non-finite values are stored as strings
    scores = (
        f"PSNR {m['psnr']:.2f} dB"
        + (f", SSIM {m['ssim']:.3f}" if "ssim" in m else "")
        + (f", LPIPS {m['lpips']:.3f}" if "lpips" in m else "")
        + ", "
        if "psnr" in m
        else ""
    )
    print(
        f"{rec['input']} -> {rec['output']}: {scores}consistency {m['consistency']:.2e}, "
        f"NFE {rec['nfe']}, {rec['seconds']:.1f} s",
        flush=True,
    )


# ----------------------------------------------------------------------------------- serve
def _cmd_serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be in [0, 65535], got {args.port}")
    if args.queue < 0:
        raise CLIError(f"--queue must be >= 0, got {args.queue}")
    _check_threads(args.threads)
    import importlib.util  # (Gradio itself is imported by the app, once its temporary folder is set)

    if importlib.util.find_spec("gradio") is None:
        raise CLIError("the web app needs Gradio: pip install -e '.[app]' (or pip install 'diffinv[app]')")
    _check_device(args.device)
    from .app import serve

    try:
        return serve(args.host, args.port, args.device, max_waiting=args.queue, threads=args.threads)
    except OSError as e:  # the port is taken, the address cannot be bound
        raise CLIError(f"cannot serve on {args.host}:{args.port}: {_one_line(e)}") from None


# ----------------------------------------------------------------------------------- listings
#: (kind, how to pass it to --model / priors.load)
CHECKPOINT_KINDS = [
    ("shipped prior", "a name listed above, e.g. --model natural-64"),
    ("diffusers folder", "DIR with unet/ (+ scheduler/) and safetensors weights (DDPM/DDIM VP schedule)"),
    ("hub id", "org/name, e.g. google/ddpm-celebahq-256 (downloaded when online)"),
    (
        "OpenAI ADM .pt",
        "256x256_diffusion_uncond.pt (ImageNet), ffhq_10m.pt (FFHQ); other names need an ADM config",
    ),
    (
        "score-SDE VE",
        "diffusers folder with a ScoreSdeVeScheduler (NCSN++), e.g. for mcg form=ve / score-proj",
    ),
]


def _cmd_models(args: argparse.Namespace) -> int:
    from .priors import describe_shipped_priors

    rows = describe_shipped_priors()
    print("shipped priors (--model NAME):")
    print(f"  {'name':<18} {'channels':>8} {'size':>7} {'parameters':>11} {'file size':>10}")
    for r in rows:
        params = f"{r['parameters'] / 1e6:.2f} M" if r["parameters"] else "?"
        print(
            f"  {r['name']:<18} {r['channels']:>8} {r['size']:>7} {params:>11} {r['bytes'] / 2**20:>7.1f} MiB"
        )
    if not rows:
        print("  (none installed)")
    print("\ncheckpoint kinds accepted by --model (diffinv.priors.load):")
    for kind, how in CHECKPOINT_KINDS:
        print(f"  {kind:<18} {how}")
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from .catalog import SPECS  # torch-free copy of operators.available_specs()

    specs = SPECS
    width = max(len(form) for form, _ in specs)
    print("degradation specs (--task SPEC):")
    for form, description in specs:
        print(f"  {form:<{width}}  {description}")
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from .catalog import METHODS  # torch-free copy of the solver registry

    if args.method is not None:
        _print_method_defaults(args.method)
        return 0
    width = max(len(m.name) for m in METHODS)
    print("methods (--method NAME); [classical] = no prior, [svd] = needs an operator with an SVD:")
    for m in METHODS:
        tags = ("" if m.needs_prior else "[classical] ") + ("[svd] " if m.requires_svd else "")
        print(f"  {m.name:<{width}}  {tags}{m.description}")
    return 0


def _print_method_defaults(name: str) -> None:
    """``diffinv methods NAME``: the generic defaults and each operator family's overrides."""
    from . import solvers
    from .families import FAMILIES

    cls = solvers.get_class(name)
    print(f"{name}: {cls.description}")
    print("default hyperparameters (--param KEY=VALUE overrides any of them):")
    print("  " + ", ".join(f"{k}={v!r}" for k, v in cls.defaults.items()))
    # a solver with several forms (mcg: vp / ve) has family defaults per form
    variants = [{"form": f} for f in ("vp", "ve")] if "form" in cls.defaults else [{}]
    for family in FAMILIES:
        for given in variants:
            extra = cls.family_defaults(family, dict(given))
            if extra:
                label = family + (f" ({given['form']})" if given else "") + " tasks:"
                print(f"  {label:<20}" + ", ".join(f"{k}={v!r}" for k, v in extra.items()))
