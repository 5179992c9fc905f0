"""Typed results: dataclasses whose attributes, mapping and JSON say the same."""

from __future__ import annotations

import json

from cli_helpers import run_main

from resnets.deploy import evaluate_checkpoint
from resnets.deploy.evaluate import Evaluation
from resnets.scoring import Scores


def test_a_result_reads_as_its_json():
    scores = Scores(loss=0.5, top1=90.0, top5=99.0, n=10)
    assert scores.to_dict() == dict(loss=0.5, top1=90.0, top5=99.0, n=10)  # optional fields left out when None
    assert scores["top1"] == scores.top1 == 90.0 and "confusion" not in scores and scores.get("confusion") is None
    scores.confusion = [[1]]
    assert scores.to_dict()["confusion"] == [[1]] and "confusion" in scores


def test_eval_returns_an_evaluation_and_the_command_prints_it(tmp_path):
    result = evaluate_checkpoint("resnet20", "cifar10", "sample:cifar10", split="all", amp="off",
                                 per_class=True)
    assert isinstance(result, Evaluation) and result.n == 2000 and result.split == "all"
    assert result["top1"] == result.top1 and set(result.per_class_accuracy) == set(result.data_classes)
    shown = run_main("eval", "resnet20", "--weights", "cifar10", "--data", "sample:cifar10", "--split", "all",
                     "--amp", "off", "--per-class", "--json")
    assert shown.returncode == 0, shown.stderr
    printed = json.loads(shown.stdout)
    assert printed == json.loads(json.dumps(result.to_dict()))
    assert {"loss", "top1", "top5", "n", "amp", "split", "split_reason", "num_classes", "data_classes",
            "per_class_accuracy", "confusion"} <= set(printed)
