"""Command line: ``diffinv demo | restore | eval | models | tasks | methods | train``.

Thin: each command is one ``_cmd_<name>`` function (validate, call the library, report) plus one
parser block in :func:`build_parser`. Every error a user can cause is printed as a single line
``diffinv <command>: error: ...`` with exit code 2, and a failed run leaves no output files behind.
Commands that write results also write ``OUT/config.json``; ``--config FILE`` repeats such a run,
with explicit flags overriding the file's values (see :mod:`diffinv.config`).

Start-up time: this module imports no torch (nor numpy, diffusers, ...) at module level, and each
command checks its output folder and inputs (:mod:`diffinv.preflight`) before it imports them,
so ``--help``, ``tasks``, ``methods`` (from :mod:`diffinv.catalog`) and most errors answer in a
fraction of a second; importing torch alone takes 2-3 s. ``tests/test_startup.py`` keeps it so.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class _ParseError(CLIError):
    """A command-line parsing error, reported with the (sub)parser's ``prog``."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one-line exceptions (printed by :func:`main`), not exits."""

    def error(self, message: str):  # argparse's hook for every parsing error
        raise _ParseError(self.prog, message)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise CLIError(f"--threads must be >= 1, got {threads}")


def _set_threads(threads: int | None) -> int:
    """Apply ``--threads`` (when given) and return the previous setting, to be restored."""
    import torch

    _check_threads(threads)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    return previous


def _restore_threads(previous: int) -> None:
    import torch

    torch.set_num_threads(previous)


def _check_device(name: str):
    """``torch.device(name)``, refused (one line) when unknown or not available here."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise CLIError(f"unknown device {name!r} ({_one_line(e)})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"device {name!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CLIError(f"device {name!r} requested but MPS is not available")
    return device


def _cmd_demo(args: argparse.Namespace) -> int:
    from .preflight import check_output_dir

    check_output_dir(args.out)  # before the priors are loaded and the minutes of restorations
    if args.steps is not None and args.steps < 1:
        raise CLIError(f"--steps must be >= 1, got {args.steps}")
    _check_threads(args.threads)
    _check_device(args.device)
    from .demo import run_demo

    previous = _set_threads(args.threads)
    try:
        run_demo(
            out=args.out,
            seed=args.seed,
            quiet=args.quiet,
            steps=args.steps,
            fast=args.fast,
            device=args.device,
            threads=args.threads,
        )
    finally:
        _restore_threads(previous)
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
        data=args.data,
        out=args.out,
        size=args.size,
        channels=args.channels,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        quiet=args.quiet,
        init_from=init_from,
        window=args.window or "",
        hu_offset=args.hu_offset,
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
    previous = _set_threads(args.threads)
    try:
        summary = evaluate(
            args.data,
            args.task,
            args.methods,
            args.out,
            n=args.n,
            crop=args.crop,
            sigma_y=args.sigma_y,
            steps=args.steps,
            model=args.model,
            seed=args.seed,
            device=args.device,
            overwrite=args.overwrite,
            quiet=args.quiet,
            window=args.window,
            hu_offset=args.hu_offset,
            resize=args.resize,
            samples=args.samples,
        )
    finally:
        _restore_threads(previous)
    if not args.quiet and int(os.environ.get("RANK", "0")) == 0:
        print((Path(args.out) / "results.md").read_text(encoding="utf-8"), end="")
        print(f"{len(summary)} method(s); per-image metrics, images and figures in {args.out}")
    return 0


# ----------------------------------------------------------------------------------- restore
def _cmd_restore(args: argparse.Namespace) -> int:
    from .restore import check_arguments, restore_files  # (torch-free until restore_files runs)

    shared = dict(
        steps=args.steps,
        sigma_y=args.sigma_y,
        seed=args.seed,
        out=args.out,
        mask=args.mask,
        params=args.param,
    )
    # the checks that need no torch: a bad --out or a missing file fails in milliseconds
    check_arguments(args.inputs, args.task, args.method, **shared)
    _check_threads(args.threads)
    previous = _set_threads(args.threads)
    try:
        restore_files(
            args.inputs,
            args.task,
            args.method,
            model=args.model,
            measured=args.measured,
            device=args.device,
            progress=not args.quiet,
            on_record=None if args.quiet else _print_record,
            extra_config={"threads": args.threads, "quiet": args.quiet},
            warn=_warn_restore,
            window=args.window,
            hu_offset=args.hu_offset,
            slice_index=args.slice,
            resize=args.resize,
            tile_batch=args.tile_batch,
            samples=args.samples,
            save_samples=args.save_samples,
            **shared,
        )
    finally:
        _restore_threads(previous)
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


def build_parser() -> argparse.ArgumentParser:
    from .config import add_config_argument

    parser = _Parser(
        prog="diffinv",
        description="Zero-shot image restoration and sparse-view CT with pretrained diffusion priors.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="restore bundled images offline and write a comparison figure")
    demo.add_argument("--out", default="out/demo", help="output folder [out/demo]")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--steps", type=int, default=None, help="diffusion steps of every method [the demo's]")
    demo.add_argument("--fast", action="store_true", help="2 steps per method: a smoke test, seconds")
    demo.add_argument("--device", default="cpu", help="torch device [cpu]")
    demo.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads [1: 64x64 images gain little from more, and lose a lot on shared cores]",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bars or table")
    add_config_argument(demo)
    demo.set_defaults(func=_cmd_demo)

    rs = sub.add_parser(
        "restore",
        help="restore image files: degrade clean images and restore them, or restore observations (--measured)",
    )
    rs.add_argument("inputs", nargs="*", metavar="INPUT", help="image files (.png/.jpg/.tif/.npy)")
    rs.add_argument("--task", help="degradation spec, e.g. sr4, inpaint-box, colorize, ct30 (diffinv tasks)")
    rs.add_argument("--method", default="ddnm", help="solver (diffinv methods) [ddnm]")
    rs.add_argument(
        "--model",
        default=None,
        help="prior name or path (diffinv models) [ct-ellipses-64 for ct tasks, else natural-64]",
    )
    rs.add_argument("--steps", type=int, default=None, help="solver steps/iterations [the method's default]")
    rs.add_argument("--sigma-y", type=float, default=0.0, help="measurement noise std, [0, 1] units [0]")
    rs.add_argument("--seed", type=int, default=0, help="seed of masks, noise and the solver [0]")
    rs.add_argument("--out", default="out/restore", help="output folder [out/restore]")
    rs.add_argument(
        "--measured",
        action="store_true",
        help="INPUT is the observation y (low-res photo for srK, gray photo for colorize, "
        "damaged photo + --mask, .npy sinogram for ctN), not a clean image",
    )
    rs.add_argument("--mask", metavar="FILE", help="inpainting mask image, white = keep (task inpaint-mask)")
    rs.add_argument(
        "--window",
        metavar="PRESET|C,W",
        help="CT window mapping HU to [0, 1]: lung, soft-tissue, bone, brain, or CENTER,WIDTH in HU "
        "(needed for DICOM and --hu-offset inputs; adds a .npy output in HU)",
    )
    rs.add_argument(
        "--hu-offset",
        type=float,
        default=None,
        help="16-bit PNG/TIFF/.npy inputs store HU + this (e.g. 1024)",
    )
    rs.add_argument(
        "--slice", type=int, default=None, metavar="K", help="slice K of a NIfTI volume (last axis)"
    )
    rs.add_argument(
        "--resize",
        nargs="?",
        const=True,
        default=None,
        type=int,
        metavar="N",
        help="resize inputs to the prior's size (or N x N) before restoring; stated in the record",
    )
    rs.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="solver hyperparameter, repeatable, e.g. --param eta=0.5 --param form=ve",
    )
    rs.add_argument(
        "--tile-batch",
        type=int,
        default=None,
        metavar="N",
        help="images larger than the prior: up to N windows per network batch [8]",
    )
    rs.add_argument(
        "--samples",
        type=int,
        default=1,
        metavar="K",
        help="K posterior samples per input, batched: writes their mean, a std heatmap (+ .npy) and, "
        "with a ground truth, an uncertainty figure [1]",
    )
    rs.add_argument(
        "--save-samples", action="store_true", help="with --samples K > 1: keep each sample's PNG"
    )
    rs.add_argument("--device", default="cpu", help="torch device [cpu]")
    rs.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default]")
    rs.add_argument("--quiet", action="store_true", help="no progress bars or summary lines")
    add_config_argument(rs)
    rs.set_defaults(func=_cmd_restore)

    sub.add_parser("models", help="list shipped priors and accepted checkpoint kinds").set_defaults(
        func=_cmd_models
    )
    sub.add_parser("tasks", help="list degradation specs").set_defaults(func=_cmd_tasks)
    me = sub.add_parser("methods", help="list solvers (with a NAME: its defaults per task family)")
    me.add_argument("method", nargs="?", default=None, metavar="NAME", help="show this solver's defaults")
    me.set_defaults(func=_cmd_methods)

    tr = sub.add_parser("train", help="train a small DDPM prior (diffusers format output)")
    tr.add_argument("--data", required=True, help="image folder, or 'ellipses' for CT phantoms")
    tr.add_argument("--out", required=True)
    tr.add_argument("--size", type=int, default=64)
    tr.add_argument("--channels", type=int, choices=(1, 3), default=3)
    tr.add_argument("--steps", type=int, default=10_000)
    tr.add_argument("--batch", type=int, default=32)
    tr.add_argument("--lr", type=float, default=5e-4)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default="cpu")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.add_argument(
        "--init-from",
        metavar="DIR",
        help="start from the weights of a diffusers folder or a shipped prior (e.g. natural-64), "
        "not random ones; the architecture must match",
    )
    tr.add_argument(
        "--window", metavar="PRESET|C,W", help="CT slices in HU (DICOM / --hu-offset): window to [0, 1]"
    )
    tr.add_argument("--hu-offset", type=float, default=None, help="16-bit slices store HU + this (e.g. 1024)")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=_cmd_train)
    ev = sub.add_parser(
        "eval",
        help="evaluate methods on an image folder or ellipse phantoms (resumable; torchrun shards it)",
    )
    ev.add_argument("--data", help="image folder (png/jpg/tif), or ellipses:N for N phantoms")
    ev.add_argument("--task", help="degradation spec, e.g. sr4, inpaint-box, ct30")
    ev.add_argument("--methods", help="comma-separated methods, e.g. pinv,ddnm,dps")
    ev.add_argument(
        "--limit", dest="n", type=int, default=None, metavar="N", help="use the first N images [all]"
    )
    # the option's old name, hidden: under torchrun it fails (torchrun's own parser reads --n as an
    # ambiguous prefix of --nproc-per-node, --nnodes, --node-rank, ...), elsewhere it still works
    ev.add_argument("--n", dest="n", type=int, default=None, help=argparse.SUPPRESS)
    ev.add_argument("--crop", type=int, default=None, help="square crop size [the prior's, else 64]")
    ev.add_argument("--sigma-y", type=float, default=0.0, help="measurement noise std [0]")
    ev.add_argument("--steps", type=int, default=None, help="solver steps [each method's default]")
    ev.add_argument("--model", default=None, help="prior name or path [ct-ellipses-64 / natural-64]")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default=None, help="torch device [cuda:LOCAL_RANK if present, else cpu]")
    ev.add_argument("--out", help="output folder; rerunning the same command resumes")
    ev.add_argument("--overwrite", action="store_true", help="discard earlier results in OUT")
    ev.add_argument("--window", metavar="PRESET|C,W", help="CT slices in HU: window to [0, 1] (see restore)")
    ev.add_argument("--hu-offset", type=float, default=None, help="16-bit slices store HU + this (e.g. 1024)")
    ev.add_argument(
        "--resize", action="store_true", help="scale each whole image to the crop size instead of cropping"
    )
    ev.add_argument(
        "--samples",
        type=int,
        default=1,
        metavar="K",
        help="K posterior samples per image (diffusion methods): score their mean, plus one-sample "
        "scores and the 90%% interval's coverage [1]",
    )
    ev.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads per process [1: then results do not depend on the number of torchrun processes]",
    )
    ev.add_argument("--quiet", action="store_true")
    add_config_argument(ev)  # --config OUT/config.json repeats (resumes) an earlier eval
    ev.set_defaults(func=_cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 and one line on stderr for user errors)."""
    from .config import apply_config

    parser = build_parser()
    command = None
    try:
        args = parser.parse_args(argv)
        command = args.command
        if getattr(args, "config", None):
            # The file's values become the command's defaults; re-parsing lets explicit flags win.
            subparser = _subparsers(parser)[command]
            apply_config(subparser, args.config, command)
            args = parser.parse_args(argv)
        return args.func(args)
    except _ParseError as exc:
        print(f"{exc.prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (CLIError, ValueError, FileNotFoundError) as exc:
        print(f"diffinv {command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diffinv {command}: interrupted", file=sys.stderr)
        return 130


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public accessor for its subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


if __name__ == "__main__":
    raise SystemExit(main())
