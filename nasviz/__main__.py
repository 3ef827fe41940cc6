"""Command line: ``python -m nasviz demo [--flops 60%] [--epochs N] [--threads N] [--out DIR]``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nasviz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train, prune, export, save and restore the digits CNN")
    demo.add_argument("--flops", default="60%", help="FLOPs limit, absolute or a percentage")
    demo.add_argument("--epochs", type=int, default=8)
    demo.add_argument("--width", type=int, default=48, help="DigitsCNN width")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    demo.add_argument("--out", default=None, help="where to write the checkpoint (default: tmp)")
    args = parser.parse_args(argv)

    from nasviz.demo import format_report, run_demo

    result = run_demo(
        flops=args.flops,
        epochs=args.epochs,
        width=args.width,
        seed=args.seed,
        threads=args.threads,
        out_dir=args.out,
        log=lambda msg: print(msg, flush=True),
    )
    print(format_report(result))
    return 0 if result["restore_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
