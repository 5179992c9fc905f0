"""The ``resnets`` command. Each sub-command is a thin call into the library."""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import errno
import json
import logging
import os
import sys
import time
import typing
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

from . import __version__, deploy, studies
from ._device import resolve_device
from ._io import disk_full_error, is_disk_full
from ._options import bounds, option_fields
from .deploy.classes import printable
from .deploy.options import (CALIBRATION_HELP, EvalOptions, ExplainOptions, ExportOptions, FeaturesOptions,
                             ModelOptions, PredictOptions)
from .deploy.server_config import ServerConfig
from .deploy.session_config import SessionConfig
from .errors import ResnetsError, UsageError, missing_dependency, range_problem
from .factory import NoDefaultWeights, choose_weights, create_model
from .models import get_model_spec, import_models, list_models
from .models.preprocessing import MAX_INPUT_SIDE
from .models.summary import InfoOptions, ListOptions, format_table, summarize
from .weights.hub import is_repository
from .weights.named import (checkpoint_model, default_weights, find_weights, get_weights, list_weights,
                            split_weights_name, weights_layout)
from .train import FusedResult, TrainingDiverged, TrainOptions, train
from .train.plot import PlotOptions, plot_runs
from .transfer import FinetuneOptions, compute_features, finetune
from .transfer.features import feature_paths


def _number(kind: type, low: float, high: float = float("inf"), *, low_open: bool = False, high_open: bool = False):
    """An argparse ``type`` for a ``kind`` (int or float) number in [low, high] ((low, high] with
    ``low_open``): a value outside is refused as argparse refuses a bad choice (usage, one error line, exit 2)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        problem = range_problem(value, low, high, low_open=low_open, high_open=high_open)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


POSITIVE = _number(int, 1)
NON_NEGATIVE = _number(int, 0)
POSITIVE_FLOAT = _number(float, 0, low_open=True)
IMAGE_SIDE = _number(int, 1, MAX_INPUT_SIDE)  # the largest side a model's preprocessing takes

def _cmd_list(args: argparse.Namespace) -> int:
    if args.weights:
        return _list_weights(args)
    names = list_models(args.filter or None, family=args.family)
    if not names:  # said on stderr: the listing itself stays empty for scripts
        family = f" in family {args.family}" if args.family else ""
        print(f"no models match {' '.join(args.filter) or 'the filter'}{family} (resnets list shows them all)",
              file=sys.stderr)
    if args.json:
        print(json.dumps([dict(name=n, family=get_model_spec(n).family, kind=get_model_spec(n).kind) for n in names]))
        return 0
    for name in names:
        spec = get_model_spec(name)
        print(printable(f"{name:<20} {spec.family:<9} {spec.kind:<9} {spec.description}"))
    return 0


def _list_weights(args: argparse.Namespace) -> int:
    entries = [get_weights(n) for n in list_weights(args.filter or None)
               if not args.family or get_model_spec(n.partition(".")[0]).family == args.family]
    if not entries:
        print(f"no named weights match {' '.join(args.filter) or 'the filter'} (resnets list --weights shows them "
              f"all)", file=sys.stderr)
    if args.json:
        print(json.dumps([_weights_record(w) for w in entries]))
        return 0
    if entries:
        print(_weights_header(width=28))
    for w in entries:
        print(printable(_weights_line(w, width=28)))
    if entries:
        print(FILE_LEGEND)
    return 0


# the file column: inside the installed package, or fetched once on first use (then cached)
_FILE_COLUMN = {True: "package", False: "download"}


def _weights_header(*, width: int) -> str:
    return f"{'NAME':<{width}} {'TOP-1':>12}  {'TOP-5':>12}  {'IMAGES':<8}  {'DATA':<11} {'FILE':<8}  SOURCE"


FILE_LEGEND = "FILE: package = inside the installed package; download = fetched once on first use, then cached"


def _weights_record(w) -> dict:
    return {"name": w.name, "model": w.model, "tag": w.tag, "default": w is default_weights(w.model),
            "shipped": w.shipped, "torchvision": w.torchvision or None, "url": w.url or None, "sha256": w.sha256,
            "options": w.options, **w.meta.to_dict()}


def _weights_line(w, *, width: int) -> str:
    top1 = "-" if w.meta.top1 is None else f"{w.meta.top1:.2f}"
    top5 = "-" if w.meta.top5 is None else f"{w.meta.top5:.2f}"
    default = " (default)" if w is default_weights(w.model) else ""
    # the images the figures were measured on: 50,000 ImageNet validation, 10,000 CIFAR test, or our 5,000 carved
    n = f"n {w.meta.n:,}" if w.meta.n else ""
    return (f"{w.name:<{width}} top-1 {top1:>6}  top-5 {top5:>6}  {n:<8}  {w.meta.dataset:<11} "
            f"{_FILE_COLUMN[w.shipped]:<8}  {w.meta.source}{default}")


def _cmd_info(args: argparse.Namespace) -> int:
    kwargs = {}
    for key in ("shortcut", "variant", "num_classes"):
        value = getattr(args, key)
        if value is not None:
            kwargs[key] = value
    summary = summarize(args.model, input_size=args.input_size, **kwargs)
    weights = [get_weights(n) for n in list_weights() if n.partition(".")[0] == args.model]
    if args.json:
        print(json.dumps({**summary, "weights": [_weights_record(w) for w in weights]}, indent=2))
        return 0
    print(format_table(summary))
    print("\nnamed weights (--weights TAG or MODEL.TAG; the default first; package: the file is inside the "
          "package, download: fetched once):" if weights else
          "\nnamed weights: none registered (--weights takes a checkpoint's path or URL, or hf-hub:ORG/NAME)")
    # weights are of the model as registered, or of the options they name: another layout computes another function
    registered = summarize(args.model) if set(kwargs) - {"num_classes"} else summary
    width = max((len(w.name) for w in weights), default=0) + 1
    for w in weights:
        layout = {k: w.options.get(k, registered.get(k)) for k in ("shortcut", "variant")}
        other = " ".join(f"--{k} {v}" for k, v in layout.items() if v is not None and v != summary.get(k))
        print("  " + _weights_line(w, width=width) + (f"  [weights of the layout {other}]" if other else ""))
    return 0


def _parse_model_args(pairs: Sequence[str]) -> dict:
    """``--model-arg key=value`` pairs; values parsed as JSON where they can be (numbers, booleans, lists)."""
    kwargs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--model-arg expects KEY=VALUE, got {pair!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return kwargs


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag (or positional argument) per field of an options dataclass, from its type,
    default and metadata (``help``, ``choices``, ``flag``, ``metavar``, ``positional``, ``group``, bounds: ``low``,
    ``high``, ``low_open``, refused as argparse refuses a bad choice)."""
    hints = typing.get_type_hints(cls)
    groups: dict[str, Any] = {}
    for f in option_fields(cls):
        meta = f.metadata
        if meta.get("positional"):
            parser.add_argument(f.name, help=meta.get("help"), nargs=meta.get("nargs"))
            continue
        kind = hints[f.name]
        optional = typing.get_origin(kind) is typing.Union and type(None) in typing.get_args(kind)
        if optional:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        default = None if f.default is dataclasses.MISSING else f.default
        target = parser
        if meta.get("group"):
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_mutually_exclusive_group()
            target = groups[meta["group"]]
        spec: dict[str, Any] = dict(dest=f.name, help=meta.get("help"))
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        if kind is bool and default is True and not optional:  # on unless asked: --no-NAME
            spec.update(action="store_false", default=True)
            flag = meta.get("flag") or "--no-" + f.name.replace("_", "-")
        elif kind is bool:
            spec.update(action=argparse.BooleanOptionalAction if optional else "store_true", default=default)
        elif kind is dict:  # KEY=VALUE pairs, repeatable
            spec.update(action="append", default=[], metavar="KEY=VALUE")
        else:
            if typing.get_origin(kind) is collections.abc.Sequence:  # one or more values
                kind = typing.get_args(kind)[0]
                spec["nargs"] = meta.get("nargs", "+")
            declared = bounds(f)
            parse = _number(kind, *declared[:2], low_open=declared[2], high_open=declared[3]) if declared else \
                kind if kind in (int, float, Path) else str
            spec.update(type=parse, default=default, choices=meta.get("choices"))
            if meta.get("metavar"):
                spec["metavar"] = meta["metavar"]
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if (required and "cli_default" not in meta) or meta.get("cli_required"):
                spec["required"] = True
        target.add_argument(flag, **spec)


def options_from_args(cls: type, args: argparse.Namespace, **given: Any):
    """The options dataclass ``cls`` from parsed arguments (``given`` wins)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in option_fields(cls):
        value = getattr(args, f.name)
        values[f.name] = _parse_model_args(value) if hints[f.name] is dict else value
    return cls(**{**values, **given})


def _run_dir(args: argparse.Namespace, kind: str = "") -> Path:
    if args.resume and not args.out:
        raise UsageError("--resume needs --out RUN_DIR, the directory of the run to continue")
    name = "fused" if "," in args.model or getattr(args, "seeds", None) else args.model
    return Path(args.out) if args.out else Path("runs") / f"{name}{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def _cmd_train(args: argparse.Namespace) -> int:
    out = _run_dir(args)
    result = train(options_from_args(TrainOptions, args, out=out))
    if isinstance(result, FusedResult):
        for name, member in result.members.items():
            print(_train_summary(name, member.out, member))
        if result.diverged:
            print(f"{len(result.diverged)} of {len(result.members)} members diverged: {', '.join(result.diverged)} "
                  f"(their last good checkpoints are kept)", file=sys.stderr)
            return TrainingDiverged.exit_code
        return 0
    if result.main:
        print(_train_summary(args.model, out, result))
    return 0


def _train_summary(name: str, out: Path, result) -> str:
    if result.diverged:
        return f"{name}: diverged at step {result.step} of {result.total_steps}: run in {out}"
    summary = f"finished {name}: run in {out}"
    if "val_top1" in result:
        summary += f", validation accuracy {result['val_top1']:.2f}% (top-5 {result['val_top5']:.2f}%) " \
                   f"on {result['val_n']} images"
    return summary


def _cmd_finetune(args: argparse.Namespace) -> int:
    out = _run_dir(args, "-finetune")
    result = finetune(options_from_args(FinetuneOptions, args, out=out))
    summary = f"finished fine-tuning {args.model} ({args.strategy}): run in {out}"
    if result and "val_top1" in result:
        summary += f", validation accuracy {result['val_top1']:.2f}% on {result['val_n']} images"
    print(summary)
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    weights = _weights_to_use(args)
    feature_paths(args.out, inputs=(_weights_file(args.model, weights), args.data))  # before any work
    features = compute_features(args.model, args.data, weights=weights, stage=args.stage,
                                batch_size=args.batch_size, device=args.device, image_size=args.image_size,
                                num_workers=args.num_workers)
    written = features.save(args.out)
    print(f"wrote {len(features.files)} x {features.features.shape[1]} features of {args.model} "
          f"({'pooled' if args.stage is None else f'stage {args.stage}, average-pooled'}) to "
          f"{', '.join(map(str, written))}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    result = deploy.evaluate_checkpoint(args.model, _weights_to_use(args), args.data, split=args.split,
                                        batch_size=args.batch_size, mean=_floats(args.mean, "--mean"),
                                        std=_floats(args.std, "--std"), device=args.device,
                                        confusion_png=args.confusion, per_class=args.per_class,
                                        num_workers=args.num_workers, amp=args.amp, backend=args.backend,
                                        precision=args.precision, calibration=args.calibration, cache_exports=True)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        which = {"val": "the validation split recorded in the weights", "all": "every image of the train part"}.get(
            result["split"], f"its {result['split']} folder" if result["split"].endswith("/") else
            f"its {result['split']!r} split")
        print(f"evaluating on {which} of {args.data}: {result['n']} images ({result['split_reason']})",
              file=sys.stderr)
        present = result["data_classes"]
        if len(present) < result["num_classes"]:
            print(f"  the data has {len(present)} of the weights' {result['num_classes']} classes "
                  f"({', '.join(map(printable, present))}); each image is scored against all of them", file=sys.stderr)
        # autocast's precision moves the last digit: say it (--amp off gives the fp32 figures of the model cards)
        computed = "fp32" if result["amp"] == "off" else f"{result['amp']} autocast"
        if "precision" in result:
            computed = f"{result['precision']} on {result['backend']}"
        print(f"{args.model} on {args.data} ({result['split']}, {result['n']} images, {computed}): "
              f"top-1 {result['top1']:.2f}%, top-5 {result['top5']:.2f}%, loss {result['loss']:.4f}")
        if "precision_check" in result:
            check = result["precision_check"]
            print(f"  {check['precision']} on {check['backend']}: top-1 {check['top1']:.2f}% against fp32's "
                  f"{check['fp32_top1']:.2f}% ({-check['loss']:+.2f} points); same top-1 as fp32 on "
                  f"{check['agreement']:.2f}% of images")
        for name, accuracy in (result.get("per_class_accuracy") or {}).items():
            print(f"  {printable(name):<24} {'-' if accuracy is None else f'{accuracy:.2f}%'}")
    return 0


def _floats(text: Optional[str], option: str) -> Optional[tuple]:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{option} expects comma-separated numbers, got {text!r}") from None


def _cmd_plot(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.runs[0]) / "curves.png"
    print(plot_runs(args.runs, out, title=args.title))
    return 0


def _take_model_weights(args: argparse.Namespace) -> None:
    """MODEL given as ``MODEL.TAG`` (as ``resnets list --weights`` prints it), a checkpoint or a run directory:
    ``info`` shows the layout of those weights; the other commands run the model with them (the library's
    ``choose_weights`` decides)."""
    if args.command == "info":
        args.model, options = weights_layout(args.model)
        for key, value in options.items():
            if hasattr(args, key) and getattr(args, key) is None:
                setattr(args, key, value)
        return
    if getattr(args, "random_weights", False):
        raise UsageError(f"{args.model} names trained weights: leave out --random-weights, or give the model's name "
                         f"alone")
    choice = choose_weights(args.model, args.weights, pretrained=True)
    if choice.reason == "checkpoint":
        print(choice.describe(), file=sys.stderr)
    args.model, args.weights = choice.model, choice.weights


def _weights_to_use(args: argparse.Namespace) -> Optional[str]:
    """The weights a command runs, by the library's one rule (``resnets.factory.choose_weights``): ``--weights``,
    the weights the model names, else the model's default named weights; none only with ``--random-weights``
    (an untrained network's answers mean nothing, so they are never given silently). Says which on stderr."""
    random_weights = getattr(args, "random_weights", False)  # eval has no such option
    if args.weights and random_weights:
        raise UsageError("--weights and --random-weights exclude each other")
    try:
        choice = choose_weights(args.model, args.weights or None, pretrained=not random_weights)
    except NoDefaultWeights:
        untrained = " (or --random-weights for an untrained network, whose outputs mean nothing)" \
            if hasattr(args, "random_weights") else ""
        raise UsageError(f"{args.model} has no named weights; pass --weights with a checkpoint's path or URL, or "
                         f"hf-hub:ORG/NAME{untrained}") from None
    # said unless the user's own words name them (--weights DEFAULT is said as the entry it names)
    if choice.reason in ("default", "untrained") or (choice.reason == "given" and choice.weights != args.weights):
        print(choice.describe(), file=sys.stderr)
    return choice.weights


def _weights_file(model: str, weights: Optional[str]) -> Optional[str]:
    """The file on this machine that ``weights`` reads, where there is one already: the path given, a shipped
    file, or the cached download of named weights (so that no output overwrites it)."""
    named = find_weights(model, weights) if weights and not is_repository(model) else None
    if named is None:
        return weights
    try:
        return str(named.get_path(offline=True, progress=False))
    except ResnetsError:  # not downloaded yet: nothing to overwrite
        return None


def _session(args: argparse.Namespace, **kwargs):
    config = options_from_args(SessionConfig, args, device=str(resolve_device(args.device)), cache_exports=True)
    session = deploy.InferenceSession(args.model, weights=_weights_to_use(args), calibration=args.calibration,
                                      config=config, **kwargs)
    for reason in session.refused.values():
        print(f"precision auto refused {reason}", file=sys.stderr)
    return session


def _named_files(items: Sequence[str]) -> list[str]:
    """The files among the command line's images (not folders): each gets an answer or stops the run."""
    return [item for item in items if not Path(item).is_dir()]


def _none_readable(paths: Sequence[Path], items: Sequence[str]) -> UsageError:
    """The error of a command none of whose images found in ``items`` could be read (each was skipped, said)."""
    return UsageError(f"none of the {len(paths)} images found in {', '.join(items)} could be read")


def _cmd_predict(args: argparse.Namespace) -> int:
    paths = deploy.find_images(args.images)
    if not paths:
        raise UsageError(f"no images found in {', '.join(args.images)}")
    named = _named_files(args.images)
    session = _session(args)
    results, skipped, first_frame = [], [], []
    for start in range(0, len(paths), args.batch_size):
        read = deploy.read_images(paths[start:start + args.batch_size], session.preprocessing, named=named,
                                  report=False)
        first_frame += read.first_frame
        skipped += [{"image": str(path), "error": str(error)} for path, error in read.skipped]
        if read.batch is not None:
            for path, top in zip(read.paths, session.predict(read.batch, top_k=args.top_k)):
                results.append({"image": str(path), "predictions": [p.to_dict() for p in top]})
    deploy.report_multi_frames(first_frame)  # once for the run, not once a batch
    if not results:
        raise _none_readable(paths, args.images)
    if len(session.timings) > 1:  # chosen by timing: which runtime and precision ran, and against what
        timed = ", ".join(f"{key} {seconds * 1000:.1f} ms" for key, seconds in sorted(session.timings.items(),
                                                                                      key=lambda kv: kv[1]))
        print(f"ran {session.backend}/{session.precision}, the fastest on {session.chosen_on} ({timed})",
              file=sys.stderr)
    if args.json:
        print(json.dumps({"arch": session.arch, "backend": session.backend, "precision": session.precision,
                          "results": results, "skipped": skipped}, indent=2))
        return 0
    for result in results:
        print(printable(result["image"]))
        for p in result["predictions"]:  # class names come from the checkpoint: shown, never obeyed
            print(f"  {p['probability']:7.2%}  {p['label']:>5}  {printable(p['name'])}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from . import interpret  # deferred: grad-cam is the optional 'explain' extra

    paths = deploy.find_images(args.images)
    if not paths:
        raise UsageError(f"no images found in {', '.join(args.images)}")
    names = interpret.output_names(paths)
    weights = _weights_to_use(args)
    model = create_model(args.model, weights=weights) if weights else create_model(args.model)
    named = _named_files(args.images)
    written = 0
    for start in range(0, len(paths), args.batch_size):
        read = deploy.read_images(paths[start:start + args.batch_size], model.preprocessing, named=named)
        if read.batch is None:
            continue
        chunk_names = [names[start + i] for i in read.indices]
        for record in interpret.explain_images(model, read.batch, chunk_names, args.out, method=args.method,
                                               top_k=args.top_k, targets=args.target):
            written += 1
            top = ", ".join(f"{t['name']} {t['probability']:.1%}" for t in record["predictions"])
            f = record["faithfulness"]
            print(f"{record['image']}: {top}; p({record['target']['name']}) {f['whole']:.2f} -> "
                  f"top {f['top_hidden']:.2f} / bottom {f['bottom_hidden']:.2f} / random {f['random_hidden']:.2f} "
                  f"with {f['fraction']:.0%} hidden")
    if not written:
        raise _none_readable(paths, args.images)
    print(f"wrote {written} explanations to {args.out} (NAME.png, NAME.json, NAME.heatmap.npy each)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    deploy.check_export_options(args.format, args.precision, args.calibration is not None)  # before any work
    deploy.check_export_path(args.out, args.format)
    weights = _weights_to_use(args)
    deploy.check_export_path(args.out, args.format, inputs=(_weights_file(args.model, weights),))
    model = create_model(args.model, weights=weights) if weights else create_model(args.model)
    real = None
    if args.check_images:
        named = _named_files(args.check_images)
        paths = deploy.find_images(args.check_images)[:args.check_count]
        real = deploy.read_images(paths, model.preprocessing, named=named).batch
    calibration = None
    if args.calibration:
        calibration = deploy.load_images(args.calibration, model.preprocessing, count=args.calibration_count).images
    report = deploy.export_model(model, args.out, args.format, real_inputs=real, tolerance=args.tolerance,
                                 precision=args.precision, calibration=calibration)
    for name, diff in report.max_abs_diff.items():
        agreement = f", same top-1 on {report.agreement[name]:.1f}%" if name in report.agreement else ""
        print(f"max abs difference vs PyTorch fp32, {name}: {diff:.3g}{agreement}")
    within = f"within {report.tolerance:g}" if report.precision == "fp32" else "differences reported above"
    print(f"wrote {report.path} ({args.format}, {report.precision}, dynamic batch), {within}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .deploy.server import listen, serve  # deferred: fastapi and uvicorn are the optional 'serve' extra

    config = options_from_args(ServerConfig, args)
    sock = listen(config.host, config.port)  # an address that cannot be used is said before the model loads
    serve(_session(args), config, sock)
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    for source in args.imports or []:
        import_models(source)
    out = Path(args.out)
    if args.study == "degradation":
        result = studies.run_degradation(options_from_args(studies.DegradationConfig, args))
        for f in result["findings"]:
            print(f"{f['kind']}: {f['deep']} train error {f['deep_train_error']:.2f}% vs {f['shallow']} "
                  f"{f['shallow_train_error']:.2f}%")
    elif args.study == "gradients":
        result = studies.run_gradients(options_from_args(studies.GradientConfig, args))
        for e in result["models"]:
            when = studies.gradients.when_label(e)
            print(f"{e['model']:<12} {when:<10} input / last-block gradient norm {e['input_over_last_block']:.3g}")
    elif args.study == "responses":
        result = studies.run_responses(options_from_args(studies.ResponseConfig, args))
        for e in result["models"]:
            print(f"{e['model']:<12} mean response std {sum(e['std']) / len(e['std']):.3f}")
    else:
        studies.run_table(args.models, out, input_size=args.input_size)
        print((out / "table.md").read_text())
        return 0
    print(f"report: {out / 'README.md'}")
    return 0



def add_session_options(parser: argparse.ArgumentParser) -> None:
    """An inference session's flags (predict, serve): SessionConfig's fields, and the calibration images."""
    add_options(parser, SessionConfig)
    parser.add_argument("--calibration", metavar="DATA", help=CALIBRATION_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnets", description="Residual networks of He et al. (2015, 2016).")
    parser.add_argument("--version", action="version", version=f"resnets {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list the registered models, or with --weights the named weights")
    add_options(p, ListOptions)
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="a model's layer table (paper Table 1), parameters and multiply-adds")
    add_options(p, InfoOptions)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("train", help="train a model with a recipe; resumable, one or many processes (torchrun)")
    add_options(p, TrainOptions)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("finetune", help="fine-tune pretrained weights on a labelled image set (new classifier)")
    add_options(p, FinetuneOptions)
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("features", help="embeddings of every image of a data source (.npy or .safetensors)")
    add_options(p, FeaturesOptions)
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("eval", help="evaluate weights on a data split: top-1, top-5, loss")
    add_options(p, EvalOptions)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("plot", help="training and validation error against iterations (PNG)")
    add_options(p, PlotOptions)
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("predict", help="top-k classes of images (files or directories)")
    add_options(p, PredictOptions)
    add_session_options(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("explain", help="class activation maps of images (PNG, JSON and the map as .npy each), "
                                         "with a faithfulness check")
    add_options(p, ExplainOptions)
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("export", help="export to ONNX, torch.export (.pt2) or TorchScript, checked against PyTorch")
    add_options(p, ExportOptions)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("serve", help="HTTP service: POST /predict, GET /health, GET /metadata")
    add_options(p, ModelOptions)
    add_session_options(p)
    add_options(p, ServerConfig)
    p.set_defaults(func=_cmd_serve)
    p = sub.add_parser("study", help="the paper's evidence: degradation, gradients, responses, table")
    kinds = p.add_subparsers(dest="study", metavar="STUDY")
    kinds.required = True
    # your own architectures: a module whose builders are registered with @resnets.register_model
    imports = argparse.ArgumentParser(add_help=False)
    imports.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                         help="a module name or .py file registering models of your own (repeatable)")
    q = kinds.add_parser("degradation", parents=[imports],
                           help="plain vs residual nets trained alike (paper Figure 6)")
    add_options(q, studies.DegradationConfig)
    q = kinds.add_parser("gradients", parents=[imports],
                           help="per-layer gradient norms of plain vs residual nets (log scale)")
    add_options(q, studies.GradientConfig)
    q = kinds.add_parser("responses", parents=[imports],
                           help="std of each residual function's output, trained nets (Figure 7)")
    add_options(q, studies.ResponseConfig)
    q = kinds.add_parser("table", parents=[imports],
                           help="Table 1 (stages, blocks, parameters, multiply-adds) as Markdown")
    q.add_argument("--models", nargs="+", default=["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"])
    q.add_argument("--input-size", type=IMAGE_SIDE, help="square input side (default: each model's own)")
    q.add_argument("--out", required=True, help="study directory")
    p.set_defaults(func=_cmd_study)
    return parser


def _warning_line(command: str):
    """warnings.showwarning for the command line: one line each, ``resnets CMD: warning: ...`` without
    Python's file name and source-line echo."""
    def show(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        print(f"resnets {command}: warning: {text} ({category.__name__})", file=file or sys.stderr)
    return show


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    shown = warnings.showwarning
    warnings.showwarning = _warning_line(args.command)
    # which cache a checkpoint came from (torch.hub's, huggingface_hub's, ours) is logged at INFO: said on stderr
    said = logging.StreamHandler(sys.stderr)
    said.setFormatter(logging.Formatter(f"resnets {args.command}: %(message)s"))
    weights_log = logging.getLogger("resnets.weights")
    level = weights_log.level
    weights_log.addHandler(said)
    weights_log.setLevel(logging.INFO)
    try:
        return _run(args)
    finally:
        warnings.showwarning = shown
        weights_log.removeHandler(said)
        weights_log.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    try:
        model = getattr(args, "model", None)
        if isinstance(model, str) and not is_repository(model):
            # a checkpoint file or run directory where the model goes (train takes an architecture)
            checkpoint = checkpoint_model(model) if args.command != "train" else None
            name, tagged = split_weights_name(model)
            if checkpoint is None:
                get_model_spec(name)  # an unknown model is named as such, before its weights, images or data
            if checkpoint is not None and args.command == "finetune":  # its options take a model and weights
                if args.weights:
                    raise UsageError(f"{model} is a checkpoint, and --weights {args.weights} others: give one")
                args.model, args.weights = checkpoint[0], str(checkpoint[1])
            elif (checkpoint is not None or tagged is not None) and args.command not in ("train", "finetune"):
                _take_model_weights(args)
        if isinstance(getattr(args, "device", None), str):
            resolve_device(args.device)  # every command's --device, before any work
        if getattr(args, "weights", None) == "":  # not "the default weights": an empty value is a mistake
            raise UsageError("--weights is empty; give named weights (resnets list --weights), a checkpoint's path "
                             "or URL, or hf-hub:ORG/NAME")
        return args.func(args)
    except ResnetsError as error:  # wrong input: one line; anything else is a bug and stays a traceback
        kind = "" if error.exit_code == 130 else "error: "
        print(f"resnets {args.command}: {kind}{error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"resnets {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``resnets list | head``): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error as Python flushes
        return 141  # 128 + SIGPIPE, what a shell reports for a command cut off by its pipe
    except OSError as error:  # a path the system refuses (missing folder, permissions, a file where a folder
        if error.filename is None:  # goes, a full disk): the user's to fix; an OSError with no path is a bug
            raise
        if is_disk_full(error):
            print(f"resnets {args.command}: error: {disk_full_error(error.filename, error)}", file=sys.stderr)
        elif error.errno in (errno.EEXIST, errno.ENOTDIR):
            print(f"resnets {args.command}: error: {error.filename} is a file where a directory is needed; choose "
                  f"another path", file=sys.stderr)
        else:
            print(f"resnets {args.command}: error: {error.filename}: {error.strerror or error}; check the path "
                  f"and its permissions", file=sys.stderr)
        return 2
    except Exception as error:  # an optional extra not installed: name it; anything else is a bug (traceback)
        missing = missing_dependency(error)
        if missing is None:
            raise
        print(f"resnets {args.command}: error: {missing}", file=sys.stderr)
        return missing.exit_code


if __name__ == "__main__":
    sys.exit(main())
