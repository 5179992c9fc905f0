"""What an InferenceSession takes, said once: ``predict``'s and ``serve``'s runtime flags are built
from these fields (``resnets.cli.add_options``).

Apart from :mod:`resnets.deploy.session`, so that building the command line does not import the
exporters, the checkpoint readers and the calibration code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .._options import check_bounds, option
from ..errors import UsageError
from .runtimes import BACKENDS, CALIBRATION_IMAGES, MAX_ACCURACY_LOSS, PRECISIONS, QUANTIZATION_IMAGES


@dataclass
class SessionConfig:
    """How an InferenceSession prepares and runs its model."""

    backend: str = option("auto", choices=BACKENDS,
                          help="auto (default): the fastest runtime on the first batch, timed; or the one named")
    precision: str = option("fp32", choices=PRECISIONS,
                            help="fp32 (logits as the plain model's), bf16, int8 (needs --calibration), or auto: the "
                                 "fastest whose top-1 on the calibration images is within --max-accuracy-loss points "
                                 "of fp32")
    device: str = option("cpu", help="cpu (default) or cuda[:N]: the PyTorch backend on a GPU (fp32 or bf16); ONNX "
                                     "Runtime and OpenVINO run on the CPU")
    fold_bn: bool = option(True, cli=False)
    channels_last: bool = option(True, cli=False)
    # torch.compile the PyTorch runner (inductor, frozen weights): about 1.4x its eager speed on an
    # AMX CPU, for a compilation of seconds to a minute at the first batch
    compile: bool = option(False, help="torch.compile the PyTorch backend (faster after a compilation of seconds "
                                       "to a minute at start)")
    # keep the ONNX export (for ONNX Runtime, OpenVINO) in $RESNETS_CACHE/onnx, keyed by the model's
    # structure and weights, and reuse it in later sessions (the CLI turns this on)
    cache_exports: bool = option(False, cli=False)
    num_threads: Optional[int] = option(None, low=1, metavar="N",
                                        help="threads each runtime computes with (default: the runtime's own choice, "
                                             "about one per core)")
    # timed runs per candidate when choosing (after one warm-up run)
    selection_repeats: int = option(3, low=1, cli=False)
    # images a calibration source is sampled down to (the guard's set), and how many the quantiser sees
    calibration_images: int = option(CALIBRATION_IMAGES, low=1, flag="--calibration-count", metavar="N",
                                     help=f"calibration images sampled from --calibration (the accuracy check's "
                                          f"set; default {CALIBRATION_IMAGES})")
    quantization_images: int = option(QUANTIZATION_IMAGES, low=1, cli=False)
    # precision="auto" refuses a candidate losing more top-1 points than this on the calibration images
    max_accuracy_loss: float = option(MAX_ACCURACY_LOSS, low=0, high=100, metavar="POINTS",
                                      help=f"precision auto: the most top-1 points a bf16 or int8 candidate may lose "
                                           f"against fp32 on the calibration images (default {MAX_ACCURACY_LOSS:g})")

    def __post_init__(self) -> None:
        if self.backend == "int8":  # an older spelling, named in its own words before the choices are checked
            raise UsageError("backend='int8' is now precision='int8' (with backend 'auto', 'onnxruntime' or "
                             "'openvino')")
        check_bounds(self)
