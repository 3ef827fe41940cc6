"""Command line: ``python -m nasviz demo [--flops 60%] [--epochs N] [--threads N] [--out DIR]``."""

from __future__ import annotations

import argparse
import sys

from nasviz.demo import DEFAULT_OUT_DIR, check_demo_args, format_report, run_demo
from nasviz.errors import NasvizError


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); the exit status is 0 when
    the demo's saved model restored correctly, else 1 (bad arguments exit with 2).
    """
    parser = argparse.ArgumentParser(prog="nasviz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train, prune, export, save and restore the digits CNN")
    demo.add_argument("--flops", default="60%", help="FLOPs limit, absolute or a percentage")
    demo.add_argument("--epochs", type=int, default=8)
    demo.add_argument("--width", type=int, default=48, help="DigitsCNN width")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    demo.add_argument(
        "--out",
        default=DEFAULT_OUT_DIR,
        help=f"directory for its files (default: {DEFAULT_OUT_DIR})",
    )
    args = parser.parse_args(argv)
    try:  # every argument is checked before any work (no data loaded, nothing trained)
        check_demo_args(
            flops=args.flops, epochs=args.epochs, width=args.width, threads=args.threads
        )
    except NasvizError as e:
        demo.error(str(e))

    result = run_demo(
        flops=args.flops,
        epochs=args.epochs,
        width=args.width,
        seed=args.seed,
        threads=args.threads,
        out_dir=args.out,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
        progress=True,
    )
    print(format_report(result))
    return 0 if result["restore_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
