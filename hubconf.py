"""torch.hub entry points: one per registered model, each ``resnets.create_model`` under the model's name.

    model = torch.hub.load("OWNER/resnets", "resnet56", weights="cifar10")   # a GitHub copy of this repository
    model = torch.hub.load("path/to/resnets", "resnet56", source="local", pretrained=True)
    torch.hub.list("OWNER/resnets")                                          # the model names (GitHub only)
    print(torch.hub.help("OWNER/resnets", "resnet56"))                      # its options and named weights

torch.hub puts this folder on ``sys.path``; the package lives in ``src/``, which goes in front of it, so the
repository's own code is what runs.
"""

import os as _os
import sys as _sys

dependencies = ["torch", "torchvision", "numpy", "safetensors"]

_SRC = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "src")
if _SRC not in _sys.path:
    _sys.path.insert(0, _SRC)

from resnets import create_model as _create_model  # noqa: E402  (after the path above)
from resnets import get_model_spec as _get_model_spec  # noqa: E402
from resnets import list_models as _list_models  # noqa: E402
from resnets.weights.named import weights_for as _weights_for  # noqa: E402


def _doc(name: str) -> str:
    lines = [f"{_get_model_spec(name).description}", "",
             f"Equivalent to resnets.create_model({name!r}, weights=weights, pretrained=pretrained, **kwargs): "
             "keyword arguments go to the ResNet (num_classes, in_chans, ...); weights= takes a tag below, "
             "a MODEL.TAG name, a checkpoint's path or URL, or hf-hub:ORG/NAME."]
    named = _weights_for(name)
    if named:
        lines += ["", "Named weights (pretrained=True loads the first):"]
        for weights in named:
            meta = weights.meta
            accuracy = f"{meta.top1:.2f} % top-1 on {meta.n:,} {meta.dataset} images" if meta.top1 else meta.dataset
            lines.append(f"  weights={weights.tag!r}: {accuracy}")
    else:
        lines += ["", "No named weights are registered for it: pretrained=True is refused."]
    return "\n".join(lines)


def _entry_point(name: str):
    def entry_point(pretrained: bool = False, *, weights=None, **kwargs):
        return _create_model(name, weights=weights, pretrained=pretrained, **kwargs)

    entry_point.__name__ = entry_point.__qualname__ = name
    entry_point.__doc__ = _doc(name)
    return entry_point


for _name in _list_models():
    globals()[_name] = _entry_point(_name)
