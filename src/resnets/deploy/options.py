"""What the commands that run a trained network take (``features``, ``eval``, ``predict``, ``explain``,
``export``), said once: their flags are built from these fields (``resnets.cli.add_options``), the weights a
model gets by the library's one rule (:func:`resnets.factory.choose_weights`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .._options import option, required, same_as
from .._precision import AutocastOption
from ..data.pipeline import DataConfig
from .export import EXPORT_PRECISIONS, FORMATS
from .runtimes import PRECISIONS, QUANTIZATION_IMAGES
from .session_config import SessionConfig

MODEL_HELP = ("model name (resnets list); MODEL.TAG: the model with those named weights (resnets list --weights); or "
              "a checkpoint of ours (FILE.safetensors) or a training run's directory (its best.safetensors, else "
              "last.safetensors), whose file names the architecture")
WEIGHTS_HELP = ("named weights (TAG or MODEL.TAG, see resnets list --weights), a checkpoint path or URL, or a "
                "repository: hf-hub:ORG/NAME (Hugging Face Hub) or local-dir:PATH (default: the model's default "
                "named weights)")
CALIBRATION_HELP = ("images for int8 calibration and the auto accuracy check: a data source (SOURCE[:SPLIT], e.g. "
                    "photos.zip:train) or a folder")
IMAGES_HELP = "image files or directories (searched recursively)"


@dataclass(kw_only=True)
class ModelOptions:
    """A trained network: the model and its weights."""

    model: str = required(help=MODEL_HELP, positional=True)
    weights: Optional[str] = option(help=WEIGHTS_HELP)
    random_weights: bool = option(False, help="run an untrained, randomly initialised network (its outputs mean "
                                              "nothing)")


@dataclass(kw_only=True)
class FeaturesOptions(ModelOptions):
    data: str = required(help="data source")
    out: str = required(help="FILE.npy (+ FILE.json: files, labels, classes) or FILE.safetensors")
    stage: Optional[int] = option(help="average-pooled output of stage K (0: stem) instead of the pooled features "
                                       "the classifier sees", low=0)
    image_size: Optional[int] = same_as(DataConfig, "image_size", help="input side (default: the weights' own "
                                                                       "preprocessing)")
    batch_size: int = same_as(DataConfig, "batch_size", 64, help="images a batch (default 64)")
    device: str = option("cpu", help="cpu (default) or cuda[:N]")
    num_workers: Optional[int] = same_as(DataConfig, "num_workers", help="data loader workers for large images "
                                                                         "(default: the cores, at most 4)")


@dataclass(kw_only=True)
class EvalOptions(ModelOptions):
    random_weights: bool = option(False, cli=False)  # a score of an untrained network is chance: not offered
    data: str = required(help="data source")
    split: str = option("auto", help="auto (default): the validation split recorded in the weights when --data is "
                                     "the data they were trained on, else the source's own held-out split where it "
                                     "has one (test, else a val/ folder), else every image; val: the recorded (or a "
                                     "seeded 10%%) validation split; all: every image of the source's train part (a "
                                     "folder without split folders is all train); or the source's own split name "
                                     "such as test, or val/ for a folder named val")
    mean: Optional[str] = option(help="per-channel mean, e.g. 0.49,0.48,0.45 (default: the weights' own)")
    std: Optional[str] = option(help="per-channel std (default: the weights' own)")
    batch_size: int = same_as(DataConfig, "batch_size", 256, help="images a batch (default 256)")
    device: str = option("cpu", help="cpu (default) or cuda[:N]")
    num_workers: Optional[int] = same_as(DataConfig, "num_workers", help="data loader workers for large images "
                                                                         "(default: the cores, at most 4)")
    amp: str = same_as(AutocastOption, "amp", "auto", help="autocast precision (default auto: bf16 where the device "
                                                           "computes it natively; off: fp32, as the model cards' "
                                                           "figures)")
    confusion: Optional[str] = option(help="write the confusion matrix to this PNG")
    per_class: bool = option(False, help="per-class accuracy")
    backend: Optional[str] = same_as(SessionConfig, "backend", None,
                                     help="evaluate through an inference session (BN folded; ONNX Runtime, "
                                          "OpenVINO) instead of the plain model")
    precision: Optional[str] = same_as(SessionConfig, "precision", None,
                                       help="evaluate through an inference session at this precision (see predict "
                                            "--help) and report its top-1 against fp32's")
    calibration: Optional[str] = option(help=CALIBRATION_HELP, metavar="DATA")
    json: bool = option(False, help="print one JSON object")


@dataclass(kw_only=True)
class PredictOptions(ModelOptions):
    """predict's own flags; the inference session's are SessionConfig's (and ``--calibration``)."""

    images: Sequence[str] = required(help=IMAGES_HELP, positional=True, nargs="+")
    top_k: int = option(5, help="classes listed per image (default 5)", low=1)
    batch_size: int = same_as(DataConfig, "batch_size", 16, help="images a batch (default 16)")
    json: bool = option(False, help="print one JSON object")


@dataclass(kw_only=True)
class ExplainOptions(ModelOptions):
    images: Sequence[str] = required(help=IMAGES_HELP, positional=True, nargs="+")
    out: str = required(help="output directory")
    method: str = option("gradcam", help="gradcam (default), gradcam++, scorecam, hirescam, xgradcam, layercam, "
                                         "eigencam, eigengradcam, ablationcam")
    target: Optional[int] = option(help="explain this class index (default: each image's prediction)", low=0)
    top_k: int = same_as(PredictOptions, "top_k", 3, help="classes named in each figure's title")
    batch_size: int = same_as(DataConfig, "batch_size", 16, help="images a batch (default 16)")


@dataclass(kw_only=True)
class ExportOptions(ModelOptions):
    format: str = required(choices=FORMATS, help="onnx, torch.export (.pt2, recommended) or torchscript (for "
                                                 "older consumers)")
    precision: str = option("fp32", choices=tuple(sorted({p for ps in EXPORT_PRECISIONS.values() for p in ps},
                                                         key=PRECISIONS.index)),
                            help="fp32 (any format), int8 (onnx; needs --calibration) or bf16 (torch.export, "
                                 "torchscript)")
    calibration: Optional[str] = option(help="images for int8 calibration: a data source (SOURCE[:SPLIT]) or a "
                                             "folder", metavar="DATA")
    calibration_count: int = option(QUANTIZATION_IMAGES, help="how many calibration images to sample", low=1)
    out: str = required(help="output file")
    check_images: Sequence[str] = option(list, help="real images (files or directories) to compare on", nargs="*")
    check_count: int = option(8, help="how many of the real images to use", low=1)
    tolerance: float = option(1e-4, help="largest allowed max abs difference", low=0, low_open=True)


__all__ = ["CALIBRATION_HELP", "EvalOptions", "ExplainOptions", "ExportOptions", "FeaturesOptions", "MODEL_HELP",
           "ModelOptions", "PredictOptions", "WEIGHTS_HELP"]
