"""Command line: `python -m vist3a {parity, ...}`. Bad input -> one line on stderr, exit code 2."""

from __future__ import annotations

import argparse
import sys


def _parity(args) -> int:
    from .parity import run_parity

    report = run_parity(args.fixture, tol=args.tol)
    return 0 if report.passed else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vist3a", description="VIST3A: text to 3D Gaussian splats")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("parity", help="check numerical parity with the official code on a fixture")
    p.add_argument("fixture", help="FIXTURE.safetensors with a sibling FIXTURE.json")
    p.add_argument("--tol", type=float, default=1e-4, help="max|a-b| <= tol * max|ref| per tensor (default 1e-4)")
    p.set_defaults(func=_parity)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, PermissionError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
