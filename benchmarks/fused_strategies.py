"""Ways to train K copies of one small network at once, timed in one run: a training step (forward, backward,
SGD with momentum and weight decay) of

- ``alone``: one network (the baseline; its images/s is the single-run figure);
- ``sequential``: K networks stepped in turn, each its own module and optimiser (what ``resnets train --seeds``
  does today; on a GPU each on its own CUDA stream);
- ``vmap``: the K networks' parameters and BatchNorm buffers stacked (``torch.func.stack_module_state``) and one
  ``vmap``-ed ``functional_call`` computing all K at once, one optimiser over the stacked tensors (the
  candidate for a fused step: K x fewer kernel launches).

Every strategy sees K different batches (one per member), as independent runs do. After the timed steps the
script checks that ``vmap`` computes what ``sequential`` does: from the same initial weights and batches, the
largest difference of any member's weights after ``--check-steps`` steps (fp32). Prints a table and, with
``--json``, writes it.

    python benchmarks/fused_strategies.py --device cpu --members 5 --batch-size 32 --steps 20
    python benchmarks/fused_strategies.py --device cuda --members 5 --batch-size 128 --steps 200 --amp bf16
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from resnets import create_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, amp: str):
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _models(name: str, count: int, device: torch.device, channels_last: bool) -> list[torch.nn.Module]:
    models = []
    for seed in range(count):
        torch.manual_seed(seed)
        model = create_model(name, num_classes=10).to(device)
        models.append(model.to(memory_format=torch.channels_last) if channels_last else model)
    return models


def _sgd(params, lr: float = 0.1):
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)


class Sequential:
    """K modules, K optimisers, a step of each in turn (each on its own stream on a GPU)."""

    def __init__(self, models, device):
        self.models = models
        self.optimizers = [_sgd(m.parameters()) for m in models]
        self.streams = [torch.cuda.Stream(device) for _ in models] if device.type == "cuda" else None

    def step(self, images, labels, amp, device):
        for k, (model, optimizer) in enumerate(zip(self.models, self.optimizers)):
            stream = torch.cuda.stream(self.streams[k]) if self.streams else contextlib.nullcontext()
            with stream:
                if self.streams:
                    self.streams[k].wait_stream(torch.cuda.default_stream(device))
                optimizer.zero_grad(set_to_none=True)
                with _autocast(device, amp):
                    logits = model(images[k])
                F.cross_entropy(logits.float(), labels[k]).backward()
                optimizer.step()
        if self.streams:
            for stream in self.streams:
                torch.cuda.default_stream(device).wait_stream(stream)

    def weights(self, k):
        return {n: p.detach() for n, p in self.models[k].named_parameters()}


class Stacked:
    """The K networks' parameters and buffers stacked; one vmap-ed forward and backward, one optimiser."""

    def __init__(self, models, device):
        params, self.buffers = stack_module_state(models)
        self.params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        self.base = copy.deepcopy(models[0]).to("meta")
        self.optimizer = _sgd(self.params.values())

        def forward(p, b, x):
            return functional_call(self.base, (p, b), (x,))
        self.forward = vmap(forward)

    def step(self, images, labels, amp, device):
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            logits = self.forward(self.params, self.buffers, images)  # (K, B, classes)
        # the sum of the members' mean losses: each member's gradient is its own loss's
        F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none").view(
            labels.shape).mean(1).sum().backward()
        self.optimizer.step()

    def weights(self, k):
        return {n: p.detach()[k] for n, p in self.params.items()}


def time_steps(strategy, images, labels, args, device) -> float:
    for _ in range(args.warmup):
        strategy.step(images, labels, args.amp, device)
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        strategy.step(images, labels, args.amp, device)
    _sync(device)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128, help="each member's batch")
    parser.add_argument("--steps", type=int, default=50, help="timed steps, after --warmup")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--check-steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    channels_last = True
    k, b = args.members, args.batch_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(k, b, 3, 32, 32, generator=generator).to(device)
    labels = torch.randint(0, 10, (k, b), generator=generator).to(device)

    rows = {}
    alone = Sequential(_models(args.model, 1, device, channels_last), device)
    seconds = time_steps(alone, images[:1], labels[:1], args, device)
    rows["alone"] = dict(members=1, images_per_s=round(args.steps * b / seconds, 1))
    for name, make in (("sequential", Sequential), ("vmap", Stacked)):
        try:
            strategy = make(_models(args.model, k, device, channels_last), device)
            seconds = time_steps(strategy, images, labels, args, device)
            rows[name] = dict(members=k, images_per_s=round(args.steps * k * b / seconds, 1))
        except Exception as error:  # a strategy this torch or device cannot run: say so, time the others
            rows[name] = dict(members=k, error=f"{type(error).__name__}: {error}"[:300])
    for row in rows.values():
        if "images_per_s" in row:
            row["ratio_to_alone"] = round(row["images_per_s"] / rows["alone"]["images_per_s"], 2)

    # the same computation: vmap against one step after another, from the same weights and batches, in fp32; after
    # one step the two agree to rounding, later steps amplify rounding (lr 0.1 on random labels is chaotic)
    differences = {}
    for steps in sorted({1, args.check_steps}):
        check = argparse.Namespace(**{**vars(args), "warmup": 0, "steps": steps, "amp": "off"})
        sequential = Sequential(_models(args.model, k, device, False), device)
        stacked = Stacked(_models(args.model, k, device, False), device)
        time_steps(sequential, images, labels, check, device)
        time_steps(stacked, images, labels, check, device)
        differences[steps] = max((sequential.weights(m)[n] - stacked.weights(m)[n]).abs().max().item()
                                 for m in range(k) for n in sequential.weights(m))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    doc = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), device=name,
               torch=torch.__version__, model=args.model, batch_size_per_member=b, amp=args.amp,
               channels_last=channels_last, steps=args.steps, strategies=rows,
               vmap_vs_sequential_max_weight_difference={str(k): v for k, v in differences.items()})
    print(f"{args.model}, {k} members x batch {b}, {args.amp}, {args.steps} steps on {name} "
          f"(torch {torch.__version__})")
    print(f"{'strategy':<12} {'members':>7} {'images/s':>10} {'x alone':>8}")
    for strategy, row in rows.items():
        if "error" in row:
            print(f"{strategy:<12} {row['members']:>7} {'failed':>10}  {row['error']}")
        else:
            print(f"{strategy:<12} {row['members']:>7} {row['images_per_s']:>10.0f} {row['ratio_to_alone']:>8.2f}")
    for steps, difference in differences.items():
        print(f"vmap against sequential after {steps} fp32 step(s): largest weight difference {difference:.2e}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
