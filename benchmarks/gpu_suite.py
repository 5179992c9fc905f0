"""The figures only a GPU can give, in one run: CIFAR-10 under the paper's full schedule (resnet20,
resnet56: wall time, images/s, validation accuracy) and ResNet-50 training and inference throughput at
224 px against a plain eager loop measured in the same run. Writes a JSON file (the schema of
benchmarks/results/gpu.json) after every part, so a run stopped at a time limit keeps what it measured;
a part that fails is logged with its traceback and the next one runs.

    python benchmarks/gpu_suite.py --data carry/cifar10-jpeg-train.zip --json gpu.json --runs /tmp/gpu-runs

CIFAR-10: the paper's recipe (``paper-cifar``: 64k iterations of 128, lr 0.1 / 10 at 32k and 48k) on the
45k/5k split of the training zip (the paper's own validation protocol; an iteration costs the same on
45k or 50k images), bf16 autocast, channels-last, ``torch.compile`` (``reduce-overhead`` replays CUDA
graphs; if a compiled run fails, the next ones fall back to the default mode). ``time_s`` is the
whole ``train()`` call (compilation, evaluations and checkpoints included); ``steps_s`` the time from
the end of the first step (compilation) to the last one; ``profile`` the wall and GPU-busy time per step
over 50 profiled steps (``--profile``).

``cifar:MODEL:RECIPE`` trains with another recipe on the same split (into ``cifar_recipes``): weights to
ship, e.g. ``cifar:resnet56:cifar-cosine``.

ResNet-50: the plain eager loop (bf16 autocast; NCHW, then channels-last: the strongest plain PyTorch
peer) against the resnets engine with its defaults on synthetic images held on the device (``--r50-compile``
adds the engine compiled), and inference at batch 256, eager and compiled. Each part compiles afresh
(``torch._dynamo.reset()``); ``--parts`` runs a subset, e.g. ``--parts cifar:resnet56``.

``fused:MODEL:K`` times K seeds of MODEL trained side by side in one process against one alone (``fused``
in the JSON); ``table`` trains the paper's five residual depths side by side (``cifar_table``).

A tiny CPU smoke run (what tests/test_gpu_suite.py runs):
``--device cpu --iterations 3 --val-size 500 --parts cifar:resnet20,resnet50 --r50-model resnet18
--r50-batch-size 2 --r50-image-size 32 --r50-steps 1 --compile-mode none``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import resnet50_throughput as r50  # noqa: E402  (a benchmark beside this one)

from resnets.data import build_loaders  # noqa: E402
from resnets.train import TrainOptions, train  # noqa: E402
from resnets.train.checkpoint import read_metrics  # noqa: E402
from resnets.train.recipe import load_recipe  # noqa: E402

PAPER = "paper-cifar"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} cores)"


class Results:
    """The JSON document, rewritten after every part."""

    def __init__(self, path: Path, header: dict):
        self.path = path
        self.doc = dict(header, cifar_paper_schedule={}, resnet50_train={}, resnet50_infer={}, failures=[])

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.doc, indent=1) + "\n")
        tmp.replace(self.path)

    def failed(self, part: str) -> None:
        self.doc["failures"].append(dict(part=part, error=traceback.format_exc(limit=-8)))
        log(f"{part} FAILED:\n{traceback.format_exc()}")
        self.write()


class StepProfile:
    """``torch.profiler`` over ``count`` steps of a run from the end of step ``first``, started and stopped from
    the engine's ``on_step`` callback: the wall time per step and, on a GPU, its busy time per step (the sum of
    its kernels' durations) and kernel count, which tell a step bound by host work (busy well under wall) from
    one bound by its kernels. Profiling slows the steps it covers a little. It never stops the run: an error is
    recorded instead."""

    def __init__(self, first: int, count: int, device: torch.device):
        self.first, self.count, self.device = first, count, device
        self.profiler = None
        self.result: dict = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_step(self, step: int) -> None:
        try:
            if step == self.first:
                activities = [torch.profiler.ProfilerActivity.CPU]
                if self.device.type == "cuda":
                    activities.append(torch.profiler.ProfilerActivity.CUDA)
                self._sync()
                self.profiler = torch.profiler.profile(activities=activities)
                self.profiler.__enter__()
                self.start = time.perf_counter()
            elif step == self.first + self.count and self.profiler is not None:
                self._sync()
                wall = time.perf_counter() - self.start
                self.profiler.__exit__(None, None, None)
                self.result = self.summary(self.profiler.events(), wall)
                self.profiler = None
        except Exception:
            self.result = dict(error=traceback.format_exc(limit=-3))
            self.profiler = None

    def summary(self, events, wall: float) -> dict:
        """Per step: wall milliseconds and, from the profiler's CUDA events, busy milliseconds, kernels and the
        eight kernels that took longest in all."""
        kernels: dict[str, list] = {}
        for event in events:
            if event.device_type == torch.autograd.DeviceType.CUDA:
                entry = kernels.setdefault(event.name, [0, 0.0])
                entry[0] += 1
                entry[1] += event.time_range.elapsed_us()
        busy_us = sum(total for _, total in kernels.values())
        top = sorted(kernels.items(), key=lambda item: -item[1][1])[:8]
        return dict(steps=self.count, after_step=self.first, wall_ms_per_step=round(1e3 * wall / self.count, 3),
                    gpu_busy_ms_per_step=round(busy_us / 1e3 / self.count, 3) if kernels else None,
                    kernels_per_step=round(sum(n for n, _ in kernels.values()) / self.count, 1),
                    top_kernels=[dict(name=name[:120], calls_per_step=round(n / self.count, 1),
                                      ms_per_step=round(total / 1e3 / self.count, 4)) for name, (n, total) in top])


def seconds_by_model(text: str) -> dict[str, float]:
    """``MODEL=SECONDS,...`` as a dict."""
    return {model: float(seconds) for model, _, seconds in (pair.partition("=") for pair in text.split(",") if pair)}


class TooSlow(RuntimeError):
    """A run projected past its time cap, stopped after --cap-after steps."""


def cifar_run(model: str, args, compile_mode, out: Path, recipe: str = PAPER) -> dict:
    """One training through the engine (the paper's schedule unless ``recipe`` names another); its wall
    time, step time and validation accuracy."""
    marks: dict[int, float] = {}
    cap = args.max_run_s.get(model)
    settings = load_recipe(recipe)
    after = max(2, args.cap_after)
    total = args.iterations or settings.iterations or round(settings.epochs * (args.train_size // settings.batch_size))

    profile = StepProfile(*args.profile, torch.device(args.device)) if args.profile[1] > 0 else None

    def on_step(step: int, _model) -> None:
        if profile is not None:
            profile.on_step(step)
        if step in (1, after):
            marks[step] = time.perf_counter()
        if step == after and cap:  # a run that cannot end in time leaves the time to the others
            projected = (marks[after] - marks[1]) / (after - 1) * total + (marks[1] - start)
            if projected > cap:
                pace = (after - 1) * settings.batch_size / (marks[after] - marks[1])
                raise TooSlow(f"{model}: {after:,} steps at {pace:.0f} images/s project "
                              f"{projected:.0f} s for the run, over its cap of {cap:g} s (--max-run-s)")

    start = time.perf_counter()
    last = train(TrainOptions(model=model, out=out, data=args.data, recipe=recipe, device=args.device,
                              iterations=args.iterations, val_size=args.val_size, amp=args.amp, channels_last=True,
                              compile_mode=compile_mode,
                              evaluations=args.evaluations, seed=0, progress=False, log=sys.stdout,
                              on_step=on_step))
    end = time.perf_counter()
    rows = read_metrics(out)
    first = marks.get(1, start)
    # the steady pace: the engine's own images/s of each evaluation window after the first (which compiles)
    windows = [row["images_per_sec"] for row in rows[1:]] or [rows[-1]["images_per_sec"]]
    return dict(time_s=round(end - start, 1), steps_s=round(end - first, 1), first_step_s=round(first - start, 1),
                images_per_s=round(statistics.median(windows), 1), iterations=rows[-1]["step"],
                batch_size=settings.batch_size,
                val_top1=last.get("val_top1"), val_n=last.get("val_n"),
                best_val_top1=max((row.get("val_top1") or 0.0) for row in rows),
                final_train_error=round(last["train_error"], 2),
                split=f"{args.val_size} validation images carved from the zip (seed 0)",
                compile_mode=compile_mode or "off", amp=args.amp, channels_last=True, run_dir=str(out),
                profile=profile.result if profile is not None else None,
                curve=[dict(step=row["step"], val_top1=row.get("val_top1"), images_per_s=row["images_per_sec"],
                            train_error=round(row["train_error"], 2)) for row in rows])


def fused_part(spec: str, args, compile_mode, results: Results) -> None:
    """``fused:MODEL:K``: MODEL trained alone, then K seeds of it side by side (resnets.train.fused), each for
    --fused-iterations steps in this process; images/s of both (the fused figure counts every member's
    images). ``table``: the paper's five residual depths side by side, one seed each, for --table-iterations
    (the paper's 64k by default), into ``cifar_table``."""
    kind, _, rest = spec.partition(":")
    model, _, count = rest.partition(":")
    common = dict(data=args.data, recipe=PAPER, device=args.device, val_size=args.val_size, amp=args.amp,
                  channels_last=True, compile_mode=compile_mode, progress=False, log=sys.stdout)
    if kind == "table":
        models = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
        start = time.perf_counter()
        fused = train(TrainOptions(model=",".join(models), out=args.runs / "table", iterations=args.table_iterations,
                                   evaluations=args.evaluations, **common))
        seconds = round(time.perf_counter() - start, 1)
        results.doc["cifar_table"] = {name: dict(time_s=seconds, val_top1=member.get("val_top1"), recipe=PAPER,
                                                 val_n=member.get("val_n"), iterations=member.step,
                                                 together_with=len(models))
                                      for name, member in fused.members.items()}
        return
    model, members = model or "resnet20", int(count or 5)
    iterations = args.fused_iterations
    start = time.perf_counter()
    train(TrainOptions(model=model, out=args.runs / f"fused-single-{model}", iterations=iterations, evaluations=1,
                       seed=0, **common))
    single_s = time.perf_counter() - start
    torch._dynamo.reset()
    start = time.perf_counter()
    train(TrainOptions(model=model, seeds=",".join(map(str, range(members))), out=args.runs / f"fused-{model}",
                       iterations=iterations, evaluations=1, **common))
    fused_s = time.perf_counter() - start
    batch = load_recipe(PAPER).batch_size
    single, fused = iterations * batch / single_s, members * iterations * batch / fused_s
    results.doc["fused"] = dict(model=model, members=members, iterations=iterations, images_per_s=round(fused, 1),
                                single_images_per_s=round(single, 1), ratio=round(fused / single, 2),
                                single_time_s=round(single_s, 1), fused_time_s=round(fused_s, 1),
                                note="whole train() calls, compilation and one evaluation included")


def resnet50_part(args, device: torch.device, results: Results) -> None:
    ns = argparse.Namespace(model=args.r50_model, device=args.device, batch_size=args.r50_batch_size,
                            image_size=args.r50_image_size, steps=args.r50_steps, amp=args.amp,
                            channels_last=True, compile=False, workers=0)
    compiles = args.compile_mode != "none"
    synthetic = f"synthetic:{ns.image_size}x{ns.image_size}:1000:{4 * ns.batch_size}"
    train_row = results.doc["resnet50_train"]
    train_row.update(model=ns.model, batch_size=ns.batch_size, image_size=ns.image_size, amp=ns.amp,
                     timed_steps=ns.steps, cudnn_benchmark=bool(torch.backends.cudnn.benchmark))
    measures = [
        ("eager_images_per_s", lambda: r50.eager_baseline(ns, device, ns.amp, channels_last=False)),
        ("eager_channels_last_images_per_s", lambda: r50.eager_baseline(ns, device, ns.amp, channels_last=True)),
        # the engine's defaults (bf16 where native, channels-last; not compiled)
        ("images_per_s", lambda: r50.engine(ns, synthetic, "small")),
    ]
    # compiled: about 2 minutes of compilation; on 2026-11-28 (H200) it was slower than eager, but compiled with
    # the dynamic shapes the CIFAR run before it had left behind (no reset between parts then)
    if args.r50_compile and compiles:
        measures.append(("compiled_images_per_s",
                         lambda: r50.engine(argparse.Namespace(**{**vars(ns), "compile": True}), synthetic, "small")))
    for key, measure in measures:
        try:
            train_row[key] = round(measure(), 1)
            log(f"resnet50 train {key}: {train_row[key]}")
        except Exception:
            results.failed(f"resnet50_train.{key}")
        results.write()
    infer_row = results.doc["resnet50_infer"]
    infer_row.update(model=ns.model, batch_size=ns.batch_size, image_size=ns.image_size, amp=ns.amp, channels_last=True)
    for key, compiled in (("eager_images_per_s", False), ("images_per_s", compiles)):
        try:
            infer_row[key] = round(r50.inference(argparse.Namespace(**{**vars(ns), "compile": compiled}), device),
                                   1)
            log(f"resnet50 inference {key}: {infer_row[key]}")
        except Exception:
            results.failed(f"resnet50_infer.{key}")
        results.write()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the CIFAR-10 training zip")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/gpu.json"))
    parser.add_argument("--runs", type=Path, default=Path("runs/gpu-suite"), help="where the training runs go")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--parts", default="fused:resnet20:5,cifar:resnet20,resnet50,table",
                        help="the parts in order: fused:MODEL:K (K seeds side by side against one), cifar:MODEL "
                             "(the paper's schedule), cifar:MODEL:RECIPE (another recipe, e.g. weights to ship), "
                             "resnet50, table (the five residual depths side by side)")
    parser.add_argument("--fused-iterations", type=int, default=2000, help="steps of each fused-part run")
    # the five depths at the paper's 64k cannot share one 9-minute command with the other parts (resnet20 alone
    # took 266 s of it on an H200): an eighth of the schedule, milestones scaled, recorded beside the figures
    parser.add_argument("--table-iterations", type=int, default=8000,
                        help="the table's run length (default 8,000: an eighth of the paper's 64k, to fit the suite's "
                             "one command; 64000 for the paper's)")
    parser.add_argument("--iterations", type=int, help="shorter than the paper's 64k (smoke runs)")
    parser.add_argument("--val-size", type=int, default=5000, help="validation images (the paper's 5,000)")
    parser.add_argument("--evaluations", type=int, default=16)
    parser.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "off"])
    parser.add_argument("--compile-mode", default="reduce-overhead",
                        choices=["reduce-overhead", "default", "max-autotune", "none"])
    parser.add_argument("--profile", type=lambda text: tuple(int(v) for v in text.split(":")), default=(2000, 50),
                        help="FIRST:COUNT: profile COUNT steps of each CIFAR run after step FIRST (0:0: none)")
    parser.add_argument("--max-run-s", type=seconds_by_model, default=seconds_by_model("resnet20=300,resnet56=480"),
                        help="MODEL=SECONDS,...: stop a CIFAR run whose first --cap-after steps project it past "
                             "its cap")
    parser.add_argument("--cap-after", type=int, default=1000, help="the step at which --max-run-s is checked")
    parser.add_argument("--r50-model", default="resnet50", help="the 224-px network (smoke runs: a smaller one)")
    parser.add_argument("--r50-compile", action="store_true",
                        help="also time the engine's ResNet-50 step compiled (about 2 minutes of compilation)")
    parser.add_argument("--r50-batch-size", type=int, default=256)
    parser.add_argument("--r50-image-size", type=int, default=224)
    parser.add_argument("--r50-steps", type=int, default=20, help="timed steps, after as many warm-up steps")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # for every part alike, the plain loops too
    started = time.perf_counter()
    results = Results(args.json, dict(
        device=device_name(device), date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        torch=torch.__version__, cuda=torch.version.cuda, python=platform.python_version(),
        command=" ".join(["python benchmarks/gpu_suite.py", *(argv if argv is not None else sys.argv[1:])])))
    results.write()
    log(f"{results.doc['device']}, torch {torch.__version__}")

    # decode the zip once (into the decoded-image cache) so that no timed run pays for it
    try:
        start = time.perf_counter()
        _, _, info = build_loaders(args.data, batch_size=128, val_size=args.val_size, seed=0, device="cpu")
        args.train_size = info.train_size
        results.doc["data_decode_s"] = round(time.perf_counter() - start, 1)
        log(f"data ready in {results.doc['data_decode_s']} s")
    except Exception:
        results.failed("data")
        return 1

    compile_mode = None if args.compile_mode == "none" else args.compile_mode
    for part in args.parts.split(","):
        kind, _, model = part.partition(":")
        # each part compiles afresh: a function compiled for one network would be recompiled for the next
        # with dynamic shapes, and that compilation time belongs to the part that needs it
        torch._dynamo.reset()
        if kind == "resnet50":
            resnet50_part(args, device, results)
        elif kind in ("fused", "table"):
            log(f"{part}: compile {compile_mode}")
            try:
                fused_part(part, args, compile_mode, results)
            except Exception:
                results.failed("cifar_table" if kind == "table" else "fused")
        elif kind == "cifar":
            model, _, recipe = model.partition(":")
            recipe = recipe or PAPER
            # the paper's schedule under its model's name; other recipes (weights to ship) as MODEL:RECIPE
            section, key = (("cifar_paper_schedule", model) if recipe == PAPER
                            else ("cifar_recipes", f"{model}:{recipe}"))
            log(f"{model}: {recipe}, compile {compile_mode}")
            try:
                row = cifar_run(model, args, compile_mode, args.runs / key.replace(":", "-"), recipe)
            except TooSlow:
                results.failed(f"{section}.{key}")
                continue
            except Exception:
                results.failed(f"{section}.{key}")
                if compile_mode not in (None, "default"):
                    compile_mode = "default"  # the next runs without CUDA graphs
                continue
            results.doc.setdefault(section, {})[key] = dict(row, recipe=recipe)
            log(f"{model}: {json.dumps({k: v for k, v in row.items() if k != 'curve'})}")
        else:
            parser.error(f"unknown part {part!r}")
        results.doc["elapsed_s"] = round(time.perf_counter() - started, 1)
        results.write()
    log(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
