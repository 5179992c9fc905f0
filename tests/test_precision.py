"""amp="auto": bf16 where the device computes it natively, recorded with the run and kept on resume."""

import json
from pathlib import Path

import pytest
import torch

from resnets.train import RunDirError, TrainOptions, train
from resnets._precision import native_bf16, resolve_amp, resolve_channels_last


def _cpu_flags() -> set:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs /proc/cpuinfo to know the CPU's units")
def test_native_bf16_agrees_with_the_cpus_own_flags():
    flags = _cpu_flags()
    expected = bool({"amx_bf16", "avx512_bf16"} & flags) and hasattr(torch.cpu, "get_capabilities")
    assert native_bf16(torch.device("cpu")) == expected
    assert resolve_amp("auto", torch.device("cpu")) == ("bf16" if expected else "off")


def test_explicit_choices_win_and_channels_last_is_the_default_on_cpu_and_cuda():
    cpu = torch.device("cpu")
    assert resolve_amp("off", cpu) == "off" and resolve_amp("fp16", cpu) == "fp16"
    assert resolve_channels_last(None, cpu) is True  # faster in bf16 and in fp32 on the CPUs measured
    assert resolve_channels_last(None, torch.device("meta")) is False
    assert resolve_channels_last(False, cpu) is False
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_amp("fp8", cpu)


def test_the_choice_is_recorded_and_kept_on_resume(tmp_path):
    common = dict(model="resnet20", out=tmp_path / "run", data="synthetic:32x32:4:96", batch_size=16, val_size=32,
                  progress=False, evaluations=2, iterations=4)

    def stop(step, model):
        if step == 3:  # after the checkpoint of step 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainOptions(**common, on_step=stop))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    expected = resolve_amp("auto", torch.device("cpu"))
    assert config["amp"] == expected
    assert config["channels_last"] == resolve_channels_last(None, torch.device("cpu"))
    other = "off" if expected == "bf16" else "bf16"
    with pytest.raises(RunDirError, match="amp"):
        train(TrainOptions(**common, resume=True, amp=other))
    assert train(TrainOptions(**common, resume=True))["step"] == 4  # auto: the recorded choice
    assert json.loads((tmp_path / "run" / "config.json").read_text())["amp"] == expected


@pytest.mark.parametrize("units, warns", [({}, True), ({"amx_bf16": True}, False), ({"avx512_bf16": True}, False)])
def test_bf16_asked_for_where_it_is_emulated_is_said_in_one_warning(tmp_path, monkeypatch, capsys, units, warns):
    import warnings

    from resnets.cli import main
    from resnets._precision import SlowPrecisionWarning, warn_if_emulated

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: units, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_emulated("bf16", torch.device("cpu"))
        warn_if_emulated("off", torch.device("cpu"))  # fp32 is never slow for want of units
    assert [w.category for w in caught] == ([SlowPrecisionWarning] if warns else [])
    # on the command line: one warning line, and the training still runs in the precision asked for
    code = main(["train", "resnet20", "--data", "synthetic:32x32:4:32", "--val-size", "16", "--batch-size", "16",
                 "--iterations", "1", "--evaluations", "1", "--amp", "bf16", "--no-progress",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 0 and ("warning: this CPU has no bf16 units" in err) == warns, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["amp"] == "bf16"
    assert sum("bf16 units" in line for line in err.splitlines()) == (1 if warns else 0)
