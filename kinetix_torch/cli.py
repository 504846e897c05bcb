"""Command line: ``python -m kinetix_torch <command>`` (also installed as ``kinetix-torch``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="kinetix-torch", description="Kinetix physics-based RL tasks in PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="simulate the built-in demo level; write a GIF and metrics")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    demo.add_argument("--env-steps", type=int, default=120, help="env steps to simulate")
    commands.add_parser("conformance", help="check an engine against golden data (see --help)", add_help=False)
    args, rest = parser.parse_known_args(argv)

    if args.command == "conformance":
        from . import conformance

        return conformance.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    from .demo import DemoConfig, run_demo

    metrics = run_demo(DemoConfig(out=args.out, env_steps=args.env_steps))
    print(json.dumps(metrics, indent=2))
    print(f"wrote {args.out / 'rollout.gif'} and {args.out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
