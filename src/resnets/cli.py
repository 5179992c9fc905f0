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


def _session(args: argparse.Namespace, **kwargs):
    from .deploy import InferenceSession

    return InferenceSession(args.model, weights=args.weights, backend=args.backend, **kwargs)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .deploy import find_images, load_batch

    paths = find_images(args.images)
    if not paths:
        raise ValueError(f"no images found in {', '.join(args.images)}")
    session = _session(args)
    results = []
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start:start + args.batch_size]
        for path, top in zip(chunk, session.predict(load_batch(chunk, session.preprocessing), top_k=args.top_k)):
            results.append({"image": str(path), "predictions": [p.to_dict() for p in top]})
    if args.json:
        print(json.dumps({"arch": session.arch, "backend": session.backend, "results": results}, indent=2))
        return 0
    for result in results:
        print(result["image"])
        for p in result["predictions"]:
            print(f"  {p['probability']:7.2%}  {p['label']:>5}  {p['name']}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .deploy import export_model, find_images, load_batch
    from .models import create_model

    model = create_model(args.model, weights=args.weights) if args.weights else create_model(args.model)
    real = None
    if args.check_images:
        paths = find_images(args.check_images)[:args.check_count]
        real = load_batch(paths, model.preprocessing) if paths else None
    report = export_model(model, args.out, args.format, real_inputs=real, tolerance=args.tolerance)
    for name, diff in report.max_abs_diff.items():
        print(f"max abs difference vs PyTorch, {name}: {diff:.3g}")
    print(f"wrote {report.path} ({args.format}, dynamic batch), within {report.tolerance:g}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .deploy.server import ServerConfig, serve

    config = ServerConfig(host=args.host, port=args.port, top_k=args.top_k, max_body_bytes=args.max_body_bytes,
                          max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms)
    serve(_session(args), config)
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

    backends = ("auto", "torch", "onnxruntime")
    p = sub.add_parser("predict", help="top-k classes of images (files or directories)")
    p.add_argument("model")
    p.add_argument("images", nargs="+", help="image files or directories (searched recursively)")
    p.add_argument("--weights", help="checkpoint path or URL (any supported format)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--backend", choices=backends, default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="export to ONNX or TorchScript, checked against PyTorch")
    p.add_argument("model")
    p.add_argument("--weights", help="checkpoint path or URL (any supported format)")
    p.add_argument("--format", choices=["onnx", "torchscript"], required=True)
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--check-images", nargs="*", default=[], help="real images (files or directories) to compare on")
    p.add_argument("--check-count", type=int, default=8, help="how many of the real images to use")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed max abs difference")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("serve", help="HTTP service: POST /predict, GET /health, GET /metadata")
    p.add_argument("model")
    p.add_argument("--weights", help="checkpoint path or URL (any supported format)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--backend", choices=backends, default="auto")
    p.add_argument("--max-body-bytes", type=int, default=10 * 1024 * 1024)
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with")
    p.set_defaults(func=_cmd_serve)
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
