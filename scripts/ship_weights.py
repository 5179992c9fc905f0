"""Turn a finished training run into shipped named weights: a safetensors file in
``src/resnets/weights/files/`` and its model card (``MODEL-TAG.json`` beside it, read by the
named-weights registry, and ``docs/model-cards/MODEL-TAG.md`` for people).

    python scripts/ship_weights.py RUN_DIR --tag cifar10 --data-name "cifar10-jpeg-train.zip" \
        [--half] [--default]

The run must have reached its last step. Its final weights (not the best evaluation's: choosing
on the validation split and reporting it there would flatter) are re-scored in fp32 on the
validation split the run recorded, and that measurement goes into the card.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
FILES = ROOT / "src" / "resnets" / "weights" / "files"
CARDS = ROOT / "docs" / "model-cards"


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {os.cpu_count()} cores, {platform.system()}, torch {torch.__version__}"


def run_facts(run_dir: Path) -> dict:
    """Steps, epochs and the engine-measured training time of a run, from its metrics log."""
    from resnets.train.checkpoint import read_metrics

    config = json.loads((run_dir / "config.json").read_text())
    rows = read_metrics(run_dir)
    recipe = config["recipe"]
    recipe = recipe if isinstance(recipe, dict) else ast.literal_eval(recipe)  # older runs stored its repr
    batch = recipe["batch_size"]
    seconds, previous = 0.0, 0
    for row in rows:  # each row's images/s is over the interval since the previous row
        seconds += (row["step"] - previous) * batch / row["images_per_sec"]
        previous = row["step"]
    return dict(config=config, recipe=recipe, rows=rows, last=rows[-1], train_seconds=seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tag", required=True, help="the TAG of MODEL.TAG, e.g. cifar10")
    parser.add_argument("--data-name", required=True, help="how the card names the training data")
    parser.add_argument("--data", help="the data to re-score on (default: the run's own)")
    parser.add_argument("--classes", help="class-name list of the weights (a shipped list such as cifar10)")
    parser.add_argument("--eval-size", type=int, help="the input side the weights are evaluated and used at "
                        "(default: the run's; chosen on the validation split when training used a smaller one)")
    parser.add_argument("--crop-pct", type=float, help="centre-crop fraction at --eval-size (default: the run's)")
    parser.add_argument("--half", action="store_true", help="store fp16 tensors (half the file; fp32 on load)")
    parser.add_argument("--default", action="store_true", help="the model's weights for pretrained=True")
    parser.add_argument("--command", help="the training command as run (default: rebuilt from the config)")
    parser.add_argument("--notes", default="", help="anything else the card must say")
    parser.add_argument("--files-dir", type=Path, default=FILES, help="where the file and its JSON card go")
    parser.add_argument("--cards-dir", type=Path, default=CARDS, help="where the markdown card goes")
    args = parser.parse_args(argv)

    from resnets import create_model
    from resnets.deploy.evaluate import evaluate_checkpoint
    from resnets.models.summary import count_macs
    from resnets.train.checkpoint import read_sessions
    from resnets.weights.formats import save_weights

    facts = run_facts(args.run_dir)
    config, recipe, last = facts["config"], facts["recipe"], facts["last"]
    model_name = config["model"]
    state = json.loads((args.run_dir / "last.json").read_text())
    total = recipe["iterations"] or round(recipe["epochs"] * last["step"] / last["epoch"])
    if state["step"] != total or last["step"] != total:
        print(f"{args.run_dir}: at step {state['step']} of {total}; ship a finished run", file=sys.stderr)
        return 2

    name = f"{model_name}.{args.tag}"
    stem = f"{model_name}-{args.tag}"
    files, cards = args.files_dir, args.cards_dir
    files.mkdir(parents=True, exist_ok=True)
    target = files / f"{stem}.safetensors"
    model = create_model(model_name, weights=str(args.run_dir / "last.safetensors"))
    metadata = {key: value for key, value in model.checkpoint_info.metadata.items()
                if key in ("split", "seed", "step", "depth", "recipe", "distilled_from", "averaged")}
    digests = config.get("weights_sha256") or {}  # the bytes the run read (recorded by runs since it was)
    distillation = named_teacher(config.get("distillation"))
    if distillation:
        if digests.get("teacher_weights"):
            distillation = {**distillation, "sha256": digests["teacher_weights"]}
        metadata["distilled_from"] = distillation
    started_from = (config.get("transfer") or {}).get("init_weights")
    if started_from:  # a warm start (train --init-weights): named by the shipped weights it was, where it was one
        started_from = shipped_name(model_name, started_from)
        metadata["started_from"] = started_from
        if digests.get("init_weights"):
            metadata["started_from_sha256"] = digests["init_weights"]
    metadata["data"] = args.data_name
    if args.eval_size or args.crop_pct:
        from dataclasses import replace

        pre = model.preprocessing
        side = args.eval_size or pre.input_size[-1]
        model.preprocessing = replace(pre, input_size=(pre.input_size[0], side, side),
                                      crop_pct=args.crop_pct or pre.crop_pct)
        model.preprocessing.check()
    if args.half:
        model = model.half()
    save_weights(model, target, metadata=metadata)

    data = args.data or config["data"]
    scores = evaluate_checkpoint(model_name, str(target), data, split="val", amp="off")
    reloaded = create_model(model_name, weights=str(target))
    params = sum(p.numel() for p in reloaded.parameters())
    input_size = tuple(reloaded.preprocessing.input_size)
    from resnets._io import sha256_file

    card = {
        "name": name, "file": target.name, "sha256": sha256_file(target), "file_size_bytes": target.stat().st_size,
        "default": bool(args.default), "dtype": "float16" if args.half else "float32",
        "dataset": args.tag, "classes": args.classes or list(reloaded.checkpoint_info.classes or []),
        "preprocessing": reloaded.preprocessing.to_dict(),
        "params": params, "gmacs": round(count_macs(reloaded, input_size) / 1e9, 4),
        "val": {"top1": scores["top1"], "top5": scores.get("top5"), "n": scores["n"], "precision": "fp32",
                "split": "the validation split recorded in the weights (carved from the training data, seeded)",
                "command": f"resnets eval {model_name} --weights {args.tag} --data {args.data_name} "
                           f"--split val --amp off"},
        "training": {
            "data": args.data_name, "train_images": None, "val_images": scores["n"],
            "split": config["split"], "recipe_name": config.get("recipe_name"), "recipe": recipe,
            "command": args.command or (f"resnets train {model_name} --data {args.data_name} "
                                        f"--recipe {config.get('recipe_name')} --seed {config['seed']}"
                                        + (f" --init-weights {started_from}" if started_from else "")
                                        + _teacher_flags(distillation)),
            "distilled_from": distillation, "started_from": started_from,
            "started_from_sha256": digests.get("init_weights") if started_from else None,
            "averaged": model.checkpoint_info.metadata.get("averaged"),
            "iterations": last["step"], "epochs": last["epoch"],
            "final_train_error": round(last["train_error"], 2), "final_val_top1_in_training": last.get("val_top1"),
            "wall_time_s": round(facts["train_seconds"]), "machine": machine(),
            "sessions": read_sessions(args.run_dir),
        },
        "shipped": datetime.date.today().isoformat(), "license": "Apache-2.0", "notes": args.notes,
    }
    card["training"]["train_images"] = config["split"]["num_samples"] - config["split"]["val_size"]
    (files / f"{stem}.json").write_text(json.dumps(card, indent=1) + "\n")
    cards.mkdir(parents=True, exist_ok=True)
    (cards / f"{stem}.md").write_text(markdown_card(card))
    print(json.dumps({"name": name, "sha256": card["sha256"], "val_top1": scores["top1"], "n": scores["n"]}))
    return 0


def named_teacher(distillation):
    """The run's distillation record, its teacher file named by the shipped weights that hold the same tensors
    (a path on the training machine means nothing to a user; the name does). Unchanged where none match."""
    if not distillation or not distillation.get("weights"):
        return distillation
    return {**distillation, "weights": shipped_name(distillation["teacher"], distillation["weights"])}


def shipped_name(model_name: str, weights: str) -> str:
    """A weights file of ``model_name`` named by the tag of the shipped weights holding the same tensors;
    unchanged where it is not a file or none match."""
    from safetensors.torch import load_file

    from resnets.weights.named import weights_for

    path = Path(str(weights)).expanduser()
    if not path.is_file():
        return weights
    tensors = load_file(str(path))
    for named in weights_for(model_name):
        if not named.file:
            continue
        shipped = load_file(named.location)
        if shipped.keys() == tensors.keys() and all(torch.equal(shipped[k], tensors[k]) for k in tensors):
            return named.tag
    return weights


def _teacher_flags(distillation) -> str:
    """The distillation flags of the training command, as config.json recorded them."""
    if not distillation:
        return ""
    weights = f" --teacher-weights {distillation['weights']}" if distillation.get("weights") else ""
    return (f" --teacher {distillation['teacher']}{weights} --distill-alpha {distillation['alpha']:g}"
            f" --distill-temperature {distillation['temperature']:g}")


def _distilled_row(distillation: dict) -> str:
    return (f"| distilled from | {distillation['teacher']} ({distillation.get('weights') or 'its default weights'}"
            f"{_file_digest(distillation.get('sha256'))}), alpha {distillation['alpha']:g}, "
            f"temperature {distillation['temperature']:g} |")


def _file_digest(digest) -> str:
    """``; file sha256 `...``` for a card row, where the run recorded the bytes it read; else nothing."""
    return f"; file sha256 `{digest}`" if digest else ""


def _averaged_row(averaged: dict) -> str:
    if averaged.get("kind") == "swa":
        return (f"| weights | the average of {averaged['averaged']} epoch-end weights (SWA, from epoch "
                f"{averaged['start']:g}), BatchNorm statistics recomputed on {averaged['bn_batches']} training "
                f"batches |")
    return f"| weights | exponential moving average, decay {averaged.get('decay')} |"


def _sessions_row(sessions: list) -> str:
    """How the run was split over sessions (its sessions.jsonl), e.g. a resume that added --compile."""
    def one(session):
        threads = session["threads"]
        settings = [f"{threads} thread{'s' if threads != 1 else ''}", f"torch {session['torch']}"]
        if session.get("compile"):
            settings.insert(0, "compiled" + (f" ({session['compile_mode']})" if session.get("compile_mode") else ""))
        return f"from step {session['from_step']:,} on {session['started'][:10]} ({', '.join(settings)})"
    return f"| sessions | {len(sessions)}: " + "; ".join(one(s) for s in sessions) + " |"


def markdown_card(card: dict) -> str:
    training, val = card["training"], card["val"]
    hours = training["wall_time_s"] / 3600
    pre = json.loads(json.dumps(card["preprocessing"]))  # as the JSON card holds it (lists, not tuples)
    lines = [
        f"# {card['name']}", "",
        f"`resnets.create_model(\"{card['name'].partition('.')[0]}\", weights=\"{card['dataset']}\")`; "
        f"file `{card['file']}` ({card['file_size_bytes']:,} bytes, {card['dtype']}), sha256 `{card['sha256']}`.", "",
        "| | |", "| --- | --- |",
        f"| validation top-1 | **{val['top1']:.2f} %** on n = {val['n']:,} images ({val['precision']}) |",
        f"| validation split | {val['split']} |",
        f"| measured with | `{val['command']}` |",
        f"| training data | {training['data']}: {training['train_images']:,} training images |",
        f"| recipe | `{training['recipe_name']}` (`resnets train --recipe {training['recipe_name']}`) |",
        *([f"| started from | `{training['started_from']}` (`--init-weights`"
           + _file_digest(training.get("started_from_sha256")) + ") |"]
          if training.get("started_from") else []),
        *([_distilled_row(training["distilled_from"])] if training.get("distilled_from") else []),
        *([_averaged_row(training["averaged"])] if training.get("averaged") else []),
        f"| command | `{training['command']}` |",
        f"| length | {training['iterations']:,} iterations, {training['epochs']:g} epochs |",
        *([_sessions_row(training["sessions"])] if training.get("sessions") else []),
        f"| final training error | {training['final_train_error']} % |",
        f"| training time | {hours:.1f} h ({training['wall_time_s']:,} s, as the engine measured it) |",
        f"| machine | {training['machine']} |",
        f"| parameters / multiply-adds | {card['params']:,} / {card['gmacs']} G at {pre['input_size']} |",
        f"| preprocessing | input {pre['input_size']}, mean {pre['mean']}, std {pre['std']}, "
        f"crop {pre['crop_pct']:.3f}, {pre['interpolation']} |",
        f"| licence | {card['license']} |",
    ]
    if card.get("notes"):
        lines += ["", card["notes"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
