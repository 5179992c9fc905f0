"""CPU inference: torchvision eager and OpenVINO against our InferenceSession at fp32, bf16
and int8, and the top-1 each precision keeps on validation images of trained weights.

Speed: every variant is measured in the same process, interleaved (in each round every variant
runs back to back for ``--window`` seconds; the median over rounds), so that load elsewhere on the
machine hurts all alike. All
variants share one set of weights (torchvision's architecture, BN statistics calibrated on real
images) and one batch of real images (Imagenette, 224 px).

- torchvision eager fp32: the plain model, ``torch.inference_mode``.
- OpenVINO fp32 / bf16, configured as OpenVINO's documentation recommends: ``ov.convert_model``
  of the torchvision model, ``compile_model`` with ``INFERENCE_PRECISION_HINT`` and
  ``PERFORMANCE_HINT``. "latency": one synchronous request; "throughput": an AsyncInferQueue of
  ``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` requests kept busy (reported per image, as the others).
- ours fp32 / bf16 / int8: ``InferenceSession(precision=...)`` with ``backend="auto"``, which
  times every runtime for the precision on the batch and keeps the fastest (named in the row);
  fp32 / bf16 also with ``compile=True`` (the PyTorch runner ``torch.compile``d, then chosen
  among the runtimes in the same way).
  int8 calibrates on real images that the speed batch does not contain.

Accuracy: ``session.check`` on the validation images of trained weights (``--weights``, the
named ``resnet20.cifar10`` by default, or a file; its recorded validation split of
``--accuracy-data``), int8 calibrated on images of the training part.

    python benchmarks/cpu_inference.py                       # resnet18, resnet50; batch 1, 16
    python benchmarks/cpu_inference.py --quick               # a smoke test: resnet18, small, few rounds
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

import resnets
from resnets.data.sources import resolve_source
from resnets.data.splits import Split, make_split
from resnets.deploy import InferenceSession, decode_image, preprocess
from resnets.deploy.runtimes import openvino_computes_bf16, signal_stack_kept

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
DEFAULT_IMAGES = DATASETS / "imagenette-224-train.zip"
DEFAULT_ACCURACY_DATA = DATASETS / "cifar10-jpeg-train.zip"


def load_imagenette(path: Path, count: int, offset: int = 0, size: int = 224) -> torch.Tensor:
    """Preprocessed images ``offset .. offset + count`` of a fixed shuffle of the Imagenette zip."""
    preprocessing = resnets.create_model("resnet18").preprocessing
    if size != 224:
        preprocessing = type(preprocessing)(**{**preprocessing.to_dict(), "input_size": (3, size, size)})
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if n.lower().endswith((".jpeg", ".jpg")))
        random.Random(0).shuffle(names)
        chosen = names[offset:offset + count] if offset >= 0 else names[offset - count:offset]
        return torch.stack([preprocess(decode_image(archive.read(n), source=n), preprocessing) for n in chosen])


def time_interleaved(functions: dict, repeats: int, window: float = 0.5) -> dict[str, float]:
    """Median seconds per call of each function over ``repeats`` rounds, after one warm-up call.

    In each round every function runs back to back for at least ``window`` seconds (as a caller
    that uses one runtime repeatedly does), then the next: timing single calls round-robin would
    charge every call with waking the runtime's threads and refilling caches after another
    runtime ran, which at batch 1 is a large share of a call."""
    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            calls, start = 0, time.perf_counter()
            while True:
                function()
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= window:
                    break
            times[name].append(elapsed / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def calibrate_bn(model: nn.Module, images: torch.Tensor) -> None:
    """Realistic BN statistics (random weights, no pretrained file offline): train-mode passes on real images."""
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), 16):
            model(images[start:start + 16])
    model.eval()


class OpenVINOVariant:
    """The torchvision model in OpenVINO, as its documentation recommends for one hint."""

    def __init__(self, model: nn.Module, example: torch.Tensor, precision: str, hint: str):
        import openvino as ov

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = ov.convert_model(model, example_input=example[:1], input=[(-1, *example.shape[1:])])
        with signal_stack_kept():  # see resnets.deploy.runtimes.signal_stack_kept
            self.compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                                       "PERFORMANCE_HINT": hint})
        self.hint = hint
        self.request = self.compiled.create_infer_request()
        self.streams = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.queue = ov.AsyncInferQueue(self.compiled, self.streams) if hint == "THROUGHPUT" else None

    def per_call(self, batch: np.ndarray):
        """One call: a synchronous request (latency), or one batch per request of the queue (throughput)."""
        if self.queue is None:
            self.request.infer({0: batch})
            return
        for _ in range(self.streams):
            self.queue.start_async({0: batch})
        self.queue.wait_all()

    def output(self, batch: np.ndarray) -> torch.Tensor:
        self.request.infer({0: batch})
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())

    @property
    def batches_per_call(self) -> int:
        return 1 if self.queue is None else self.streams


def speed(args: argparse.Namespace, images: torch.Tensor, calibration: torch.Tensor) -> list[dict]:
    rows = []
    for name in args.models:
        reference = getattr(torchvision.models, name)().eval()
        calibrate_bn(reference, calibration[:32])
        ours = resnets.create_model(name)
        ours.load_state_dict(reference.state_dict())
        ours.preprocessing = type(ours.preprocessing)(**{**ours.preprocessing.to_dict(),
                                                         "input_size": tuple(images.shape[1:])})
        ours.eval()
        openvino = {}
        # on a CPU without bf16 units OpenVINO takes the bf16 hint and computes fp32: not a bf16 peer there
        for precision in ("f32", "bf16") if openvino_computes_bf16() else ("f32",):
            for hint in ("LATENCY", "THROUGHPUT"):
                label = f"OpenVINO {'fp32' if precision == 'f32' else precision} {hint.lower()}"
                openvino[label] = OpenVINOVariant(reference, images, precision, hint)
        sessions = {p: InferenceSession(ours, precision=p, calibration=calibration if p == "int8" else None)
                    for p in args.precisions}
        if not args.no_compile:  # the PyTorch runner compiled too, competing with the others in backend="auto"
            sessions.update({f"{p} compile=True": InferenceSession(ours, precision=p, compile=True)
                             for p in args.precisions if p != "int8"})
        for batch_size in args.batch_sizes:
            x = images[:batch_size]
            array = x.numpy()
            for session in sessions.values():
                session.backend = None  # choose again for this batch size, as a fresh session would
                session.run(x)
            with torch.inference_mode():
                expected = reference(x)
            variants = {"torchvision eager fp32": lambda: reference(x)}
            per_call = {"torchvision eager fp32": 1}
            outputs = {}
            for label, variant in openvino.items():
                variants[label] = lambda v=variant: v.per_call(array)
                per_call[label] = variant.batches_per_call
                outputs[label] = variant.output(array)
            for precision, session in sessions.items():
                label = f"ours {precision} ({session.backend})"
                variants[label] = lambda s=session: s.run(x)
                per_call[label] = 1
                outputs[label] = session.run(x)
            with torch.inference_mode():
                seconds = time_interleaved(variants, args.repeats, args.window)
            base = seconds["torchvision eager fp32"]
            for label, s in seconds.items():
                s = s / per_call[label]
                diff = (outputs[label] - expected).abs().max().item() if label in outputs else 0.0
                rows.append(dict(model=name, batch=batch_size, variant=label, images_per_s=batch_size / s,
                                 speedup=base / s, max_abs_diff=diff))
    return rows


def accuracy(args: argparse.Namespace) -> list[dict]:
    """Top-1 of each precision against fp32 on the trained weights' validation images."""
    model = resnets.create_model(args.weights_model, weights=args.weights).eval()
    metadata = model.checkpoint_info.metadata
    source = resolve_source(args.accuracy_data)
    split = Split.from_dict(metadata["split"], source) if metadata.get("split") else \
        make_split(source.targets, val_fraction=0.1, seed=0, fingerprint=source.fingerprint)
    rng = np.random.default_rng(0)
    val = np.sort(rng.permutation(split.val_indices)[:args.accuracy_images])
    train = np.sort(rng.permutation(split.train_indices)[:args.calibration])

    def batch(indices):
        return torch.stack([preprocess(source.decode(int(i)), model.preprocessing) for i in indices])

    images, labels = batch(val), torch.from_numpy(source.targets[val])
    calibration = batch(train)
    rows = []
    for precision in args.precisions:
        session = InferenceSession(model, precision=precision, calibration=calibration if precision == "int8" else None)
        session.run(images[:64])
        check = session.check(images, labels)
        rows.append(dict(precision=precision, backend=session.backend, images=check.images, top1=check.top1,
                         fp32_top1=check.fp32_top1, agreement=check.agreement, loss=check.loss))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=lambda s: s.split(","), default=["resnet18", "resnet50"])
    parser.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 16])
    parser.add_argument("--precisions", type=lambda s: s.split(","), default=["fp32", "bf16", "int8"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-compile", action="store_true", help="leave out the sessions with compile=True")
    parser.add_argument("--window", type=float, default=0.5, help="seconds each variant runs per round")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--calibration", type=int, default=128, help="images for INT8 calibration")
    parser.add_argument("--weights", default="resnet20.cifar10", help="trained weights for the accuracy table")
    parser.add_argument("--weights-model", default="resnet20")
    parser.add_argument("--accuracy-data", default=str(DEFAULT_ACCURACY_DATA))
    parser.add_argument("--accuracy-images", type=int, default=5000)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: resnet18 at 64 px, batch 1 and 4, 2 rounds, small accuracy set")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.batch_sizes, args.repeats, args.image_size, args.window = ["resnet18"], [1, 4], 2, 64, 0.05
        args.calibration, args.accuracy_images = 16, 200
    if not args.images.is_file():
        print(f"real images not found: {args.images}", file=sys.stderr)
        return 2

    print(f"# CPU inference, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    # speed images from the end of the shuffle, calibration images from its start: disjoint sets
    images = load_imagenette(args.images, max(args.batch_sizes), offset=-1, size=args.image_size)
    calibration = load_imagenette(args.images, args.calibration, offset=0, size=args.image_size)
    rows = speed(args, images, calibration)
    print("\n| model | batch | variant | images/s | vs torchvision eager | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['variant']} | {r['images_per_s']:.1f} | {r['speedup']:.2f}x | "
              f"{r['max_abs_diff']:.2e} |")
    try:
        table = accuracy(args)
    except resnets.ResnetsError as error:
        print(f"\naccuracy table skipped: {error}")
        return 0
    print(f"\nTop-1 on validation images of {args.weights} ({args.accuracy_data}, {table[0]['images']} images; "
          f"int8 calibrated on {args.calibration} training images):\n")
    print("| precision | backend | top-1 | fp32 top-1 | change (points) | same top-1 as fp32 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in table:
        print(f"| {r['precision']} | {r['backend']} | {r['top1']:.2f}% | {r['fp32_top1']:.2f}% | "
              f"{0.0 - r['loss']:+.2f} | {r['agreement']:.2f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
