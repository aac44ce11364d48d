"""Command line: ``diffinv demo | restore | eval | models | tasks | methods | train | serve``.

Thin: each command is one ``_cmd_<name>`` function in :mod:`diffinv.cli_commands` (validate, call
the library, report) plus one parser block in :func:`build_parser`. Every error a user can cause is printed as a single line
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
import sys

from .catalog import CT_PRIOR, NATURAL_PRIOR
from .cli_commands import (
    _cmd_demo,
    _cmd_eval,
    _cmd_methods,
    _cmd_models,
    _cmd_restore,
    _cmd_serve,
    _cmd_tasks,
    _cmd_train,
)
from .cli_errors import CLIError, _one_line, _ParseError, _Parser
from .errors import DiffinvError

#: the longer help texts of ``restore``
_HELP = {
    "measured": "INPUT is the observation y (low-res photo for srK, gray photo for colorize, "
    "damaged photo + --mask, .npy sinogram for ctN), not a clean image",
    "window": "CT window mapping HU to [0, 1]: lung, soft-tissue, bone, brain, or CENTER,WIDTH in HU "
    "(needed for DICOM and --hu-offset inputs; adds a .npy output in HU)",
    "samples": "K posterior samples per input, batched: writes their mean, a std heatmap (+ .npy) and, "
    "with a ground truth, an uncertainty figure [1]",
    "project": "noiseless only: N rounds of projection onto the images y allows, {A x = y} and [0, 1], "
    "after the solve (never farther from the true image) [off]",
}


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
    # one thread by default: 64x64 images gain little from more, and lose a lot on shared cores
    demo.add_argument("--threads", type=int, default=1, help="torch CPU threads [1]")
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
        help=f"prior name or path (diffinv models) [{CT_PRIOR} for ct tasks, else {NATURAL_PRIOR}]",
    )
    rs.add_argument("--steps", type=int, default=None, help="solver steps/iterations [the method's default]")
    rs.add_argument("--sigma-y", type=float, default=0.0, help="measurement noise std, [0, 1] units [0]")
    rs.add_argument(
        "--noise",
        choices=("gaussian", "poisson"),
        default="gaussian",
        help="gaussian (--sigma-y) or CT photon counts Poisson(I0 exp(-A x)); fista-tv, cg-tikhonov, "
        "ddnm+, dds, scd then use the per-bin variance [gaussian]",
    )
    rs.add_argument("--photons", type=float, default=1e4, metavar="I0", help="CT photons per bin [1e4]")
    rs.add_argument(
        "--measured-kind",
        choices=("line-integrals", "counts"),
        default="line-integrals",
        help="--measured CT sinograms hold line integrals or photon counts [line-integrals]",
    )
    rs.add_argument("--seed", type=int, default=0, help="seed of masks, noise and the solver [0]")
    rs.add_argument("--out", default="out/restore", help="output folder [out/restore]")
    rs.add_argument("--measured", action="store_true", help=_HELP["measured"])
    rs.add_argument("--mask", metavar="FILE", help="inpainting mask image, white = keep (task inpaint-mask)")
    rs.add_argument("--window", metavar="PRESET|C,W", help=_HELP["window"])
    rs.add_argument("--hu-offset", type=float, help="16-bit PNG/TIFF/.npy inputs store HU + this (e.g. 1024)")
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
    tile_help = "images larger than the prior: up to N windows per network batch [8]"
    rs.add_argument("--tile-batch", type=int, metavar="N", help=tile_help)
    rs.add_argument("--samples", type=int, default=1, metavar="K", help=_HELP["samples"])
    rs.add_argument("--project", type=int, default=None, metavar="N", help=_HELP["project"])
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
    tr.add_argument(
        "--augment",
        metavar="PRESET|KEY=V,...",
        help="train on whole images under random augmentation instead of crops: 'ct', 'geometric', or "
        "rotate=DEG,zoom=F,shift=F,contrast=F,brightness=F,gamma=F",
    )
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
    ev.add_argument(
        "--model",
        default=None,
        help=f"prior name or path [{CT_PRIOR} for ct tasks or phantoms, else {NATURAL_PRIOR}]",
    )
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
    ev.add_argument("--project", type=int, default=None, metavar="N", help=_HELP["project"])
    ev.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads per process [1: then results do not depend on the number of torchrun processes]",
    )
    ev.add_argument("--quiet", action="store_true")
    add_config_argument(ev)  # --config OUT/config.json repeats (resumes) an earlier eval
    ev.set_defaults(func=_cmd_eval)

    sv = sub.add_parser(
        "serve", help="web app in the browser (pip install -e '.[app]'): restore uploaded images"
    )
    sv.add_argument("--host", default="127.0.0.1", help="address to bind [127.0.0.1: this machine only]")
    sv.add_argument("--port", type=int, default=7860, help="port [7860]")
    sv.add_argument("--device", default="cpu", help="torch device of the jobs [cpu]")
    sv.add_argument(
        "--queue", type=int, default=8, metavar="N", help="jobs that may wait; more are refused [8]"
    )
    sv.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default]")
    sv.set_defaults(func=_cmd_serve)
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
    except (CLIError, DiffinvError, FileNotFoundError) as exc:
        # A user's mistake: one line, exit 2. Any other exception is a bug: its traceback shows.
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
