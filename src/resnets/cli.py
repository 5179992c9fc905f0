"""The ``resnets`` command. Each sub-command is a thin call into the library."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence


def _cmd_list(args: argparse.Namespace) -> int:
    from .models import get_model_spec, list_models

    names = list_models(args.filter or None, family=args.family)
    if args.json:
        print(json.dumps([dict(name=n, family=get_model_spec(n).family, kind=get_model_spec(n).kind) for n in names]))
        return 0
    for name in names:
        spec = get_model_spec(name)
        print(f"{name:<20} {spec.family:<9} {spec.kind:<9} {spec.description}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .models.summary import format_table, summarize

    kwargs = {}
    for key in ("shortcut", "variant", "num_classes"):
        value = getattr(args, key)
        if value is not None:
            kwargs[key] = value
    summary = summarize(args.model, input_size=args.input_size, **kwargs)
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="resnets", description="Residual networks of He et al. (2015, 2016).")
    parser.add_argument("--version", action="version", version=f"resnets {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("filter", nargs="*", help="glob patterns, e.g. 'resnet*'")
    p.add_argument("--family", choices=["imagenet", "cifar"])
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="a model's layer table (paper Table 1), parameters and multiply-adds")
    p.add_argument("model")
    p.add_argument("--input-size", type=int, default=None, help="square input side (default: the model's own)")
    p.add_argument("--shortcut", choices=["A", "B", "C", "none"])
    p.add_argument("--variant", choices=["v1", "v1.5"])
    p.add_argument("--num-classes", type=int)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"resnets {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
