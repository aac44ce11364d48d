"""Command line: ``diffinv demo | restore | eval | models | tasks | methods | train``.

Thin: each command is one ``_cmd_<name>`` function (validate, call the library, report) plus one
parser block in :func:`build_parser`. Every error a user can cause is printed as a single line
``diffinv <command>: error: ...`` with exit code 2, and a failed run leaves no output files behind.
Commands that write results also write ``OUT/config.json``; ``--config FILE`` repeats such a run,
with explicit flags overriding the file's values (see :mod:`diffinv.config`).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch


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


def _set_threads(threads: int | None) -> int:
    """Apply ``--threads`` (when given) and return the previous setting, to be restored."""
    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise CLIError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return previous


def _check_device(name: str) -> torch.device:
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
    from .demo import run_demo

    if args.steps is not None and args.steps < 1:
        raise CLIError(f"--steps must be >= 1, got {args.steps}")
    _check_device(args.device)
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
        torch.set_num_threads(previous)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
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
    )
    summary = train(cfg, resume=args.resume)
    print(
        f"trained {summary['steps']} steps ({summary['images_seen']} images) in "
        f"{summary['seconds']:.0f} s, final loss {summary['final_loss']:.4f}; model in {args.out}"
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import os

    from .evaluate import evaluate

    # not required=True in the parser: a --config file may supply them
    missing = [f"--{k}" for k in ("data", "task", "methods", "out") if getattr(args, k) is None]
    if missing:
        raise CLIError(f"missing required option(s): {', '.join(missing)}")
    if args.n is not None and args.n < 1:
        raise CLIError(f"--n must be >= 1, got {args.n}")
    if args.sigma_y < 0:
        raise CLIError(f"--sigma-y must be >= 0, got {args.sigma_y}")
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
    )
    if not args.quiet and int(os.environ.get("RANK", "0")) == 0:
        from pathlib import Path

        print((Path(args.out) / "results.md").read_text(encoding="utf-8"), end="")
        print(f"{len(summary)} method(s); per-image metrics, images and figures in {args.out}")
    return 0


# ----------------------------------------------------------------------------------- restore
_CT_PART = re.compile(r"ct(\d+)")
_SR_PART = re.compile(r"sr(\d+)(?:-bicubic)?")
_NATURAL_PRIOR, _CT_PRIOR = "natural-64", "ct-ellipses-64"


@dataclass
class _RestoreJob:
    """One INPUT, loaded and checked: the ground truth ``x`` or the observation ``y``, and its operator."""

    path: Path
    label: str  # task name in file names and records: the spec, or "inpaint-mask"
    op: object  # LinearOperator
    task: object  # what the pipeline gets: the spec string, or the operator (masks)
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None


def _parse_params(items: Sequence[str] | None) -> dict:
    """``--param KEY=VALUE`` items -> dict; values parsed as bool / None / int / float / string."""
    params: dict = {}
    for item in items or []:
        key, sep, raw = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise CLIError(f"--param expects KEY=VALUE, got {item!r}")
        raw = raw.strip()
        low = raw.lower()
        if low in ("true", "false"):
            value = low == "true"
        elif low in ("none", "null"):
            value = None
        else:
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    value = raw
            if isinstance(value, float) and not math.isfinite(value):
                raise CLIError(f"--param {key}: value must be finite, got {raw!r}")
        params[key] = value
    return params


def _spec_parts(spec: str) -> list[str]:
    return [p.strip() for p in spec.split("+")]


def _is_ct(spec: str | None) -> bool:
    return spec is not None and any(_CT_PART.fullmatch(p) for p in _spec_parts(spec))


def _sr_factor(spec: str | None) -> int:
    """Product of the super-resolution factors in a spec (1 if none)."""
    k = 1
    for part in _spec_parts(spec) if spec else []:
        m = _SR_PART.fullmatch(part)
        if m:
            k *= int(m[1])
    return k


def _with_channels(t: torch.Tensor, want: int | None, path: Path, why: str) -> torch.Tensor:
    """``t`` with ``want`` channels: an RGB file whose channels are equal counts as grayscale."""
    have = t.shape[1]
    if want is None or have == want:
        return t
    if want == 1 and have == 3:
        if torch.equal(t[:, :1].expand_as(t), t):
            return t[:, :1].contiguous()
        raise CLIError(f"{path} is a colour image, but {why}")
    raise CLIError(f"{path} is a grayscale image, but {why}")


def _ct_size_from_bins(bins: int) -> int | None:
    """The image size N whose default detector has ``bins = ceil(N sqrt 2)`` bins, if any."""
    n = max(1, math.floor(bins / math.sqrt(2.0)))
    for cand in (n - 1, n, n + 1):
        if cand >= 1 and math.ceil(cand * math.sqrt(2.0)) == bins:
            return cand
    return None


def _check_spec(spec: str, seed: int) -> None:
    """Refuse an unknown/malformed task before anything is loaded (built on a stand-in shape)."""
    from .operators import from_spec

    if _is_ct(spec):
        if len(_spec_parts(spec)) > 1:
            raise CLIError(f"task {spec!r}: CT cannot be composed with other degradations")
        return
    k = _sr_factor(spec)
    from_spec(spec, (3, 64 * k, 64 * k), seed=seed)


def _restore_channels(spec: str | None, prior, model: str | None) -> tuple[int | None, str]:
    """Channels of the images to restore (None: any), and why (for error messages)."""
    c = prior.image_shape[0] if prior is not None else None
    if _is_ct(spec):
        if c not in (None, 1):
            raise CLIError(
                f"task {spec} reconstructs 1-channel images, but the prior {model} has {c} channels"
            )
        return 1, f"{spec} reconstructs single-channel (grayscale) images"
    if spec and "colorize" in _spec_parts(spec):
        if c not in (None, 3):
            raise CLIError(f"colorize needs an RGB (3-channel) prior; {model} has {c} channel(s)")
        return 3, "colorize needs an RGB ground truth to degrade"
    if c is not None:
        kind = "an RGB" if c == 3 else f"a {c}-channel"
        return c, f"the prior {model} is {kind} model (a classical method such as pinv takes any image)"
    return None, ""


def _prepare_clean(path: Path, args, prior, channels, why) -> _RestoreJob:
    """Default mode: INPUT is the ground truth; build the operator that degrades it."""
    from .data.io import load_image
    from .operators import Inpaint, from_spec

    x = _with_channels(load_image(path), channels, path, why)
    C, H, W = x.shape[1:]
    if _is_ct(args.task) and prior is not None and (H, W) != tuple(prior.image_shape[1:]):
        ph, pw = prior.image_shape[1:]
        raise CLIError(
            f"{path} is {H}x{W}, but the prior {args.model} reconstructs CT images of size {ph}x{pw} only "
            f"(resize the image, or use a classical method such as pinv / fista-tv)"
        )
    k = _sr_factor(args.task)
    if k > 1 and (H % k or W % k):
        raise CLIError(
            f"{path}: image size {H}x{W} is not divisible by the super-resolution factor {k} of "
            f"{args.task}; crop it to {H - H % k}x{W - W % k} (diffinv does not pad)"
        )
    if args.mask:
        op = Inpaint.from_png(args.mask, (C, H, W))
        return _RestoreJob(path, "inpaint-mask", op, op, x=x)
    op = from_spec(args.task, (C, H, W), seed=args.seed)
    return _RestoreJob(path, args.task, op, args.task, x=x)


def _prepare_measured(path: Path, args, prior, channels, why) -> _RestoreJob:
    """``--measured``: INPUT is the observation y; infer the image shape and build the operator."""
    from .data.io import load_image
    from .operators import Inpaint, from_spec

    y = load_image(path)
    spec = args.task
    if _is_ct(spec):
        if y.shape[1] != 1:
            raise CLIError(
                f"{path}: a {spec} sinogram must be an array of shape (views, bins) or (1, views, bins), "
                f"got {y.shape[1]} channels"
            )
        bins = y.shape[-1]
        if prior is not None:
            n = prior.image_shape[-1]
            want = math.ceil(n * math.sqrt(2.0))
            if bins != want:
                raise CLIError(
                    f"{path}: sinogram has {bins} detector bins, but the prior {args.model} reconstructs "
                    f"{n}x{n} images, whose {spec} sinograms have {want} bins"
                )
        else:
            n = _ct_size_from_bins(bins)
            if n is None:
                raise CLIError(f"{path}: {bins} detector bins is not ceil(N*sqrt(2)) for any image size N")
        shape = (1, n, n)
    else:
        colorize = bool(spec) and "colorize" in _spec_parts(spec)
        if colorize:
            y = _with_channels(y, 1, path, "colorize --measured expects the grayscale observation")
        elif channels is not None and y.shape[1] != channels:
            y = _with_channels(y, channels, path, why)
        k = _sr_factor(spec)
        c = channels if channels is not None else (3 if colorize else y.shape[1])
        shape = (c, y.shape[-2] * k, y.shape[-1] * k)
    if args.mask:
        op = Inpaint.from_png(args.mask, shape)
        label = "inpaint-mask"
    else:
        op = from_spec(spec, shape, seed=args.seed)
        label = spec
    if tuple(op.out_shape) != tuple(y.shape[1:]):
        raise CLIError(
            f"{path}: observation of shape {tuple(y.shape[1:])} does not fit {label} on images of shape "
            f"{shape}, which measures {tuple(op.out_shape)}"
        )
    if isinstance(op, Inpaint):
        y = op.A(y)  # the missing pixels of a damaged photo carry no information: zero them
    return _RestoreJob(path, label, op, op, y=y)


def _restore_record(job: _RestoreJob, args, method: str, model, solver_params: dict, r, png: Path) -> dict:
    from . import __version__
    from .config import _jsonable

    return {
        "input": str(job.path),
        "output": str(png),
        "task": job.label,
        "spec": None if args.mask else args.task,
        "mask": str(args.mask) if args.mask else None,
        "measured": bool(args.measured),
        "method": method,
        "model": model,
        "steps": args.steps,
        "sigma_y": args.sigma_y,
        "seed": args.seed,
        "device": args.device,
        "solver_params": _jsonable(solver_params),
        "image_shape": list(job.op.in_shape),
        "measurement_shape": list(job.op.out_shape),
        "nfe": r.nfe,
        "seconds": r.seconds,
        "metrics": {k: (v if math.isfinite(v) else str(v)) for k, v in r.metrics.items()},
        "diffinv_version": __version__,
    }


def _cmd_restore(args: argparse.Namespace) -> int:
    previous = _set_threads(args.threads)
    try:
        return _restore(args)
    finally:
        torch.set_num_threads(previous)


def _restore(args: argparse.Namespace) -> int:
    from . import pipeline, priors, solvers
    from .config import write_config, write_json_atomic
    from .data.io import save_image

    # --- arguments (a --config file may have supplied any of them, so check types too)
    inputs = [Path(p) for p in (args.inputs or [])]
    if not inputs:
        raise CLIError("no INPUT given (an image, or with --measured an observation / .npy sinogram)")
    if args.task is None and not args.mask:
        raise CLIError("--task is required (e.g. sr4, inpaint-box, colorize, ct30; see 'diffinv tasks')")
    if args.mask and args.task is not None and not args.task.startswith("inpaint"):
        raise CLIError(f"--mask defines an inpainting task; it cannot be combined with --task {args.task}")
    if not isinstance(args.sigma_y, (int, float)) or not math.isfinite(args.sigma_y) or args.sigma_y < 0:
        raise CLIError(f"--sigma-y must be a finite number >= 0, got {args.sigma_y}")
    if args.steps is not None and (not isinstance(args.steps, int) or args.steps < 1):
        raise CLIError(f"--steps must be a positive integer, got {args.steps}")
    if isinstance(args.seed, bool) or not isinstance(args.seed, int):
        raise CLIError(f"--seed must be an integer, got {args.seed!r}")
    if args.mask and not Path(args.mask).is_file():
        raise CLIError(f"mask file not found: {args.mask}")
    stems: dict[str, Path] = {}
    for p in inputs:
        if p.stem in stems:
            raise CLIError(f"inputs {stems[p.stem]} and {p} would write the same output names ({p.stem}_...)")
        stems[p.stem] = p
    params = _parse_params(args.param)
    device = _check_device(args.device)
    method_cls = solvers.get_class(args.method)
    if args.task is not None:
        _check_spec(args.task, args.seed)

    # --- prior (only for diffusion methods), then every input, before anything is written
    model = None
    prior = None
    if method_cls.needs_prior:
        model = args.model or (_CT_PRIOR if _is_ct(args.task) else _NATURAL_PRIOR)
        prior = priors.load(model, device=None if device.type == "cpu" else device)
    args.model = model
    solver = pipeline.make_solver(args.method, prior, args.steps, **params)  # checks the parameters
    channels, why = _restore_channels(args.task, prior, model)
    prepare = _prepare_measured if args.measured else _prepare_clean
    jobs = []
    for path in inputs:
        try:
            job = prepare(path, args, prior, channels, why)
        except CLIError:
            raise
        except ValueError as e:
            msg = _one_line(e)
            raise CLIError(msg if str(path) in msg else f"{path}: {msg}") from None
        solver.check_operator(job.op)
        jobs.append(job)

    # --- run; on any failure remove what this run wrote
    out = Path(args.out)
    out_existed = out.exists()
    written: list[Path] = []
    progress = not args.quiet
    try:
        for job in jobs:
            common = dict(sigma_y=float(args.sigma_y), seed=args.seed, steps=args.steps, progress=progress)
            if job.x is not None:
                r = pipeline.degrade_and_restore(
                    job.x.to(device), job.task, args.method, prior, **common, **params
                )
            else:
                r = pipeline.restore_measured(
                    job.y.to(device), job.op, args.method, prior, **common, **params
                )
            name = f"{job.path.stem}_{job.label}_{args.method}"
            png = save_image(r.x_hat.clamp(0, 1), out / f"{name}.png")
            written.append(png)
            record = _restore_record(job, args, args.method, model, solver.params, r, png)
            written.append(write_json_atomic(record, out / f"{name}.json"))
            if not args.quiet:
                m = r.metrics
                scores = (
                    f"PSNR {m['psnr']:.2f} dB" + (f", SSIM {m['ssim']:.3f}" if "ssim" in m else "") + ", "
                    if "psnr" in m
                    else ""
                )
                print(
                    f"{job.path} -> {png}: {scores}consistency {m['consistency']:.2e}, "
                    f"NFE {r.nfe}, {r.seconds:.1f} s",
                    flush=True,
                )
        written.append(write_config(out, "restore", args))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        if not out_existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return 0


# ----------------------------------------------------------------------------------- listings
def _safetensors_parameters(path: Path) -> int | None:
    """Number of parameters stored in a safetensors file, read from its header only."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 100_000_000:
                return None
            header = json.loads(f.read(n))
    except (OSError, ValueError):
        return None
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def _shipped_prior_rows() -> list[dict]:
    from .priors import shipped_priors
    from .priors.loading import ASSETS_DIR

    rows = []
    for name in shipped_priors():
        folder = ASSETS_DIR / name
        unet = folder / "unet" if (folder / "unet").is_dir() else folder
        try:
            cfg = json.loads((unet / "config.json").read_text())
        except (OSError, ValueError):
            cfg = {}
        size = cfg.get("sample_size")
        size = f"{size[0]}x{size[1]}" if isinstance(size, list) else f"{size}x{size}" if size else "?"
        weights = sorted(unet.glob("*.safetensors"))
        n_params = _safetensors_parameters(weights[0]) if weights else None
        file_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        rows.append(
            {
                "name": name,
                "channels": cfg.get("in_channels", "?"),
                "size": size,
                "parameters": n_params,
                "bytes": file_bytes,
            }
        )
    return rows


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
    rows = _shipped_prior_rows()
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
    from .operators import available_specs

    specs = available_specs()
    width = max(len(form) for form, _ in specs)
    print("degradation specs (--task SPEC):")
    for form, description in specs:
        print(f"  {form:<{width}}  {description}")
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from . import solvers

    methods = solvers.available()
    width = max(len(name) for name in methods)
    print("methods (--method NAME); [classical] = no prior, [svd] = needs an operator with an SVD:")
    for name, description in methods.items():
        cls = solvers.get_class(name)
        tags = ("" if cls.needs_prior else "[classical] ") + ("[svd] " if cls.requires_svd else "")
        print(f"  {name:<{width}}  {tags}{description}")
    return 0


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
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="solver hyperparameter, repeatable, e.g. --param eta=0.5 --param form=ve",
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
    sub.add_parser("methods", help="list solvers").set_defaults(func=_cmd_methods)

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
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=_cmd_train)
    ev = sub.add_parser(
        "eval",
        help="evaluate methods on an image folder or ellipse phantoms (resumable; torchrun shards it)",
    )
    ev.add_argument("--data", help="image folder (png/jpg/tif), or ellipses:N for N phantoms")
    ev.add_argument("--task", help="degradation spec, e.g. sr4, inpaint-box, ct30")
    ev.add_argument("--methods", help="comma-separated methods, e.g. pinv,ddnm,dps")
    ev.add_argument("--n", type=int, default=None, help="use the first N images [all]")
    ev.add_argument("--crop", type=int, default=None, help="square crop size [the prior's, else 64]")
    ev.add_argument("--sigma-y", type=float, default=0.0, help="measurement noise std [0]")
    ev.add_argument("--steps", type=int, default=None, help="solver steps [each method's default]")
    ev.add_argument("--model", default=None, help="prior name or path [ct-ellipses-64 / natural-64]")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default=None, help="torch device [cuda:LOCAL_RANK if present, else cpu]")
    ev.add_argument("--out", help="output folder; rerunning the same command resumes")
    ev.add_argument("--overwrite", action="store_true", help="discard earlier results in OUT")
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
