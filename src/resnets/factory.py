"""``create_model``: a registered architecture joined with weights.

The registry (``resnets.models``) builds networks and knows nothing of checkpoints; the
weights layer reads checkpoints and knows nothing of names; this module, above both, builds
the network a checkpoint describes and loads it.
"""

from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from .errors import UsageError
from .models import build_model
from .weights import CheckpointError, apply_preprocessing, load_checkpoint, load_state_dict
from .weights.formats import PathOrUrl


def create_model(name: str, *, weights: Optional[PathOrUrl] = None, pretrained: bool = False,
                 features_only: bool = False, out_indices: Optional[Sequence[int]] = None,
                 sha256: Optional[str] = None, strict: bool = True, **kwargs) -> nn.Module:
    """Build a registered model by name, with weights if given.

    Keyword arguments go to the ResNet (``num_classes``, ``in_chans``, ``shortcut``,
    ``variant``, ``zero_init_residual``, ``norm_layer``, ...). ``features_only=True``
    returns a network giving the feature maps of ``out_indices`` (0: stem, k: stage k).

    ``weights`` (a path or URL of any supported checkpoint format) builds the model the file
    describes: our own files supply the architecture options, and the classifier size comes
    from the file unless ``num_classes`` is given, in which case a different-sized head starts
    fresh (fine-tuning) while the rest is loaded.
    """
    if pretrained and weights is None:
        raise UsageError(f"pretrained=True: no default weights are registered for {name!r}; "
                         f"pass weights=PATH_OR_URL of a checkpoint")
    if weights is None:
        return build_model(name, features_only=features_only, out_indices=out_indices, **kwargs)
    state_dict, info = load_checkpoint(weights, sha256=sha256)
    options: dict = {}
    if info.layout == "resnets":
        arch = info.metadata.get("arch")
        if arch and arch != name:
            raise CheckpointError(f"{info.path} holds {arch} weights, not {name}; "
                                  f"use create_model({arch!r}, weights=...)")
        options.update(info.metadata.get("arch_kwargs") or {})
    file_classes = int(state_dict["fc.weight"].shape[0]) if "fc.weight" in state_dict else 0
    options["num_classes"] = file_classes
    options.update(kwargs)
    exclude: tuple[str, ...] = ()
    if features_only:
        options.pop("num_classes", None)
        model = build_model(name, features_only=True, out_indices=out_indices, **options)
        # a feature extractor keeps the stages up to its last index; the rest of the file is unused
        present = {k.split(".")[0] for k in model.state_dict()}
        exclude = tuple(sorted({k.split(".")[0] + "." for k in state_dict} - {p + "." for p in present}))
    else:
        model = build_model(name, **options)
        if options["num_classes"] != file_classes:
            exclude = ("fc.",)
    load_state_dict(model, state_dict, strict=strict, exclude=exclude, source=str(info.path), info=info)
    if info.classes is not None and not exclude:
        model.classes = list(info.classes)
    apply_preprocessing(model, info)
    model.checkpoint_info = info
    return model


__all__ = ["create_model"]
