"""One run configuration: every knob declared once, config.json read back into the class that wrote it, and runs
recorded before it resumed by it."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from resnets._options import bounds
from resnets._precision import AutocastOption
from resnets.deploy.session_config import SessionConfig
from resnets.data.pipeline import DataConfig
from resnets.data.small import DeviceLoaderConfig
from resnets.deploy.options import EvalOptions, ExplainOptions, ExportOptions, FeaturesOptions, PredictOptions
from resnets.studies import DegradationConfig, GradientConfig, ResponseConfig
from resnets.train import Recipe, TrainOptions, train
from resnets.train.config import Distillation, RunConfig
from resnets.transfer.finetune import FinetuneOptions

DATA = Path(__file__).parent / "data"
# the classes that take a training or data knob: each bound and choice is declared in one of them only
CLASSES = (DataConfig, DeviceLoaderConfig, Recipe, Distillation, TrainOptions, FinetuneOptions, DegradationConfig,
           GradientConfig, ResponseConfig, FeaturesOptions, EvalOptions, PredictOptions, ExplainOptions, ExportOptions,
           SessionConfig, AutocastOption)
# one name, two knobs: the exported file's number format (a subset per format) is not a session's precision
OTHER_KNOBS = {("ExportOptions", "precision")}
DECLARED = ("low", "high", "low_open", "high_open", "choices")


def _declaration(f) -> dict:
    return {k: f.metadata[k] for k in DECLARED if k in f.metadata}


def test_each_bound_and_choice_is_declared_once():
    own: dict[str, list[str]] = {}
    origins = {}
    for cls in CLASSES:
        for f in dataclasses.fields(cls):
            if "origin" in f.metadata:
                origins[(cls.__name__, f.name)] = f
            elif _declaration(f) and (cls.__name__, f.name) not in OTHER_KNOBS:
                own.setdefault(f.name, []).append(cls.__name__)
    # FinetuneOptions inherits TrainOptions' fields: the same declaration, not a second one
    twice = {name: where for name, where in own.items()
             if len([c for c in where if c not in ("FinetuneOptions",)]) > 1}
    assert not twice, f"declared in several classes: {twice}"
    for (cls_name, name), f in origins.items():
        origin_cls, origin_name = f.metadata["origin"].split(".")
        origin = next(o for o in dataclasses.fields(next(c for c in CLASSES if c.__name__ == origin_cls))
                      if o.name == origin_name)
        assert "origin" not in origin.metadata and _declaration(origin) == _declaration(f), (cls_name, name)
    # the knobs the four places used to say apart now share one declaration
    for name in ("batch_size", "lr", "iterations", "epochs", "evaluations", "val_size", "image_size", "seed"):
        declarations = {json.dumps(_declaration(f), default=str) for cls in CLASSES for f in dataclasses.fields(cls)
                        if f.name == name and _declaration(f)}
        assert len(declarations) == 1, (name, declarations)
    assert bounds(next(f for f in dataclasses.fields(FinetuneOptions) if f.name == "lr"))[:3] == (0, float("inf"), True)


def test_choices_are_checked_with_the_bounds(tmp_path):
    from resnets.errors import UsageError

    for make, says in ((lambda: TrainOptions(model="resnet20", out=tmp_path, pipeline="fast"),
                        "pipeline must be one of auto, small, large, got 'fast'"),
                       (lambda: Recipe(iterations=5, warmup_mode="slow"),
                        "warmup_mode must be one of linear, constant"),
                       (lambda: FinetuneOptions(model="resnet20", out=tmp_path, data="d", weights="w", strategy="x"),
                        "strategy must be one of linear-probe, full, gradual"),
                       (lambda: DegradationConfig(out=tmp_path, data="d", budget="slow"), "budget must be one of")):
        with pytest.raises(UsageError, match=says):
            make()


def test_config_json_reads_back_into_the_class_that_wrote_it(tmp_path):
    config = RunConfig(model="resnet20", data="cifar10", recipe=Recipe(iterations=10, lr=0.05), recipe_name="x",
                       seed=3, distillation=Distillation("resnet56", "cifar10", alpha=0.3), split={"seed": 3})
    record = json.loads(json.dumps(config.to_json()))
    assert RunConfig.from_json(record) == config
    assert record["recipe"]["lr"] == 0.05 and record["distillation"] == dict(teacher="resnet56", weights="cifar10",
                                                                             alpha=0.3, temperature=4.0)


RUN = dict(model="resnet20", data="synthetic:16x16:10:64", iterations=4, batch_size=8, evaluations=2, val_size=16,
           deterministic=True, progress=False, amp="off")


def test_a_run_recorded_before_the_configuration_was_typed_resumes(tmp_path):
    """config.json as the engine wrote it before RunConfig (tests/data/config-2026-11.json, written by that
    version for these options): the same file is written today, and a run holding it resumes to the weights of an
    uninterrupted run."""
    old = json.loads((DATA / "config-2026-11.json").read_text())
    whole = tmp_path / "whole"
    train(TrainOptions(out=whole, **RUN))
    written = json.loads((whole / "config.json").read_text())
    assert written.keys() == old.keys()
    assert {k: v for k, v in written.items() if k != "weights_sha256"} == \
        {k: v for k, v in old.items() if k != "weights_sha256"}

    class Stop(Exception):
        pass

    def stop_after_first_checkpoint(step, model):
        if step == 3:
            raise Stop

    resumed = tmp_path / "resumed"
    with pytest.raises(Stop):
        train(TrainOptions(out=resumed, on_step=stop_after_first_checkpoint, **RUN))
    shutil.copy(DATA / "config-2026-11.json", resumed / "config.json")  # the record of the older version
    result = train(TrainOptions(out=resumed, resume=True, **RUN))
    assert result.step == 4 and result.val_top1 == result["val_top1"]
    expected, got = load_file(str(whole / "last.safetensors")), load_file(str(resumed / "last.safetensors"))
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_every_subcommand_takes_the_flags_of_its_options_classes():
    """The command line is built from the options classes: each subcommand's flags are exactly their fields."""
    import argparse

    from resnets._options import option_fields
    from resnets.cli import build_parser
    from resnets.deploy.server_config import ServerConfig
    from resnets.deploy.session_config import SessionConfig
    from resnets.deploy.options import ModelOptions

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    session = {f.name for f in option_fields(SessionConfig)} | {"calibration"}
    from resnets.models.summary import InfoOptions, ListOptions
    from resnets.train.plot import PlotOptions

    expected = {"list": ListOptions, "info": InfoOptions, "plot": PlotOptions,
                "train": TrainOptions, "finetune": FinetuneOptions, "features": FeaturesOptions,
                "eval": EvalOptions, "predict": PredictOptions, "explain": ExplainOptions, "export": ExportOptions}
    for name, cls in expected.items():
        dests = {a.dest for a in commands[name]._actions if a.dest != "help"}
        extra = session if name == "predict" else set()
        assert dests == {f.name for f in option_fields(cls)} | extra, name
    assert set(commands) - set(expected) == {"serve", "study"}  # serve: below; study: one class per study
    serve = {a.dest for a in commands["serve"]._actions if a.dest != "help"}
    assert serve == ({f.name for f in option_fields(ModelOptions)} | session
                     | {f.name for f in option_fields(ServerConfig)})
