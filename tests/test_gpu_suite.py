"""benchmarks/gpu_suite.py on the CPU: the same code paths as its GPU run (the engine's paper-schedule runs,
the ResNet-50 engine and plain loops, inference), at toy sizes; the JSON it writes part by part, and a
failing part recorded while the next one runs."""

import json

import pytest

from script_helpers import benchmark_module

TINY = ["--device", "cpu", "--iterations", "2", "--val-size", "500", "--evaluations", "1", "--amp", "off",
        "--compile-mode", "none", "--r50-model", "resnet18", "--r50-batch-size", "2", "--r50-image-size", "32",
        "--r50-steps", "1", "--profile", "1:1"]


@pytest.fixture(scope="module")
def suite():
    with benchmark_module("gpu_suite", "resnet50_throughput") as module:
        yield module


def test_every_part_lands_in_the_json(suite, tmp_path, capsys):
    from resnets.data.sources import sample_path

    out = tmp_path / "gpu.json"
    assert suite.main(["--data", str(sample_path()), "--json", str(out), "--runs", str(tmp_path / "runs"),
                       "--parts", "cifar:resnet20,resnet50", *TINY]) == 0
    doc = json.loads(out.read_text())
    assert doc["failures"] == []
    assert doc["torch"] and doc["date"] and "gpu_suite.py" in doc["command"]
    row = doc["cifar_paper_schedule"]["resnet20"]
    assert row["iterations"] == 2 and row["batch_size"] == 128 and row["val_n"] == 500
    assert 0 <= row["val_top1"] <= 100 and row["images_per_s"] > 0
    assert 0 < row["steps_s"] <= row["time_s"]
    assert (tmp_path / "runs" / "resnet20" / "last.safetensors").is_file()
    profile = row["profile"]  # step 2 profiled; no GPU here, so no kernels
    assert profile["steps"] == 1 and profile["wall_ms_per_step"] > 0, profile
    assert profile["gpu_busy_ms_per_step"] is None and profile["kernels_per_step"] == 0
    train, infer = doc["resnet50_train"], doc["resnet50_infer"]
    for key in ("images_per_s", "eager_images_per_s", "eager_channels_last_images_per_s"):
        assert train[key] > 0, key
    assert train["batch_size"] == 2 and train["model"] == "resnet18"
    assert infer["images_per_s"] > 0 and infer["eager_images_per_s"] > 0 and infer["batch_size"] == 2
    assert "resnet20: {" in capsys.readouterr().out


def test_a_failing_part_is_recorded_and_the_next_runs_with_another_recipe(suite, tmp_path):
    from resnets.data.sources import sample_path

    out = tmp_path / "gpu.json"
    suite.main(["--data", str(sample_path()), "--json", str(out), "--runs", str(tmp_path / "runs"),
                "--parts", "cifar:resnet7,cifar:resnet20:cifar-cosine", *TINY])
    doc = json.loads(out.read_text())
    assert [f["part"] for f in doc["failures"]] == ["cifar_paper_schedule.resnet7"]
    assert "resnet7" in doc["failures"][0]["error"]
    assert doc["cifar_paper_schedule"] == {}
    # another recipe than the paper's goes to its own section, under MODEL:RECIPE, into its own run directory
    row = doc["cifar_recipes"]["resnet20:cifar-cosine"]
    assert row["recipe"] == "cifar-cosine" and row["iterations"] == 2
    config = json.loads((tmp_path / "runs" / "resnet20-cifar-cosine" / "config.json").read_text())
    assert config["recipe_name"] == "cifar-cosine" and config["recipe"]["nesterov"] is True


def test_profile_summary_adds_up_the_kernels_of_a_step(suite):
    """The GPU side of the step profile, from events shaped as torch.profiler's (no GPU here): busy time is the
    sum of the CUDA events' durations, CPU events do not count, figures are per step."""
    from types import SimpleNamespace

    import torch

    def event(name, device, microseconds):
        return SimpleNamespace(name=name, device_type=device,
                               time_range=SimpleNamespace(elapsed_us=lambda: microseconds))

    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU
    events = [event("conv", cuda, 300.0), event("conv", cuda, 100.0), event("bn", cuda, 100.0),
              event("aten::conv2d", cpu, 5000.0)]
    summary = suite.StepProfile(10, 2, torch.device("cuda")).summary(events, wall=0.004)
    assert summary["wall_ms_per_step"] == 2.0 and summary["gpu_busy_ms_per_step"] == 0.25
    assert summary["kernels_per_step"] == 1.5
    assert summary["top_kernels"][0] == dict(name="conv", calls_per_step=1.0, ms_per_step=0.2)


def test_a_run_projected_past_its_cap_stops_early_and_the_next_runs(suite, tmp_path):
    from resnets.data.sources import sample_path

    out = tmp_path / "gpu.json"
    suite.main(["--data", str(sample_path()), "--json", str(out), "--runs", str(tmp_path / "runs"),
                "--parts", "cifar:resnet20,cifar:plain20", *TINY, "--iterations", "4", "--cap-after", "2",
                "--max-run-s", "resnet20=0.001"])
    doc = json.loads(out.read_text())
    assert [f["part"] for f in doc["failures"]] == ["cifar_paper_schedule.resnet20"]
    assert "over its cap of 0.001 s" in doc["failures"][0]["error"]
    assert list(doc["cifar_paper_schedule"]) == ["plain20"]  # no cap named for it
    assert not (tmp_path / "runs" / "resnet20" / "last.json").exists()  # stopped before its one evaluation


@pytest.mark.slow
def test_the_fused_parts_land_in_the_json(suite, tmp_path):
    """``fused:MODEL:K`` and ``table`` on the CPU at two steps: the keys the GPU run's checks read."""
    from resnets.data.sources import sample_path

    out = tmp_path / "gpu.json"
    assert suite.main(["--data", str(sample_path()), "--json", str(out), "--runs", str(tmp_path / "runs"),
                       "--parts", "fused:resnet20:2,table", "--fused-iterations", "2", "--table-iterations", "2",
                       *TINY]) == 0
    doc = json.loads(out.read_text())
    assert doc["failures"] == []
    fused = doc["fused"]
    assert (fused["model"], fused["members"], fused["iterations"]) == ("resnet20", 2, 2)
    assert fused["images_per_s"] > 0 and fused["single_images_per_s"] > 0
    assert fused["ratio"] == round(fused["images_per_s"] / fused["single_images_per_s"], 2)
    members = tmp_path / "runs" / "fused-resnet20"
    assert sorted(members.iterdir()) == [members / "resnet20-seed0", members / "resnet20-seed1"]
    table = doc["cifar_table"]
    assert sorted(table) == ["resnet110", "resnet20", "resnet32", "resnet44", "resnet56"]
    for row in table.values():
        assert row["iterations"] == 2 and row["val_n"] == 500 and 0 <= row["val_top1"] <= 100 and row["time_s"] > 0
