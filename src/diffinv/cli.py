"""Command line: ``diffinv demo | train`` (thin: parses arguments, calls the library)."""

from __future__ import annotations

import argparse
import sys


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out=args.out, seed=args.seed, quiet=args.quiet)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffinv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="restore bundled images offline and write a comparison figure")
    demo.add_argument("--out", default="out/demo", help="output folder [out/demo]")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=_cmd_demo)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, ValueError, FileNotFoundError) as exc:
        print(f"diffinv {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
