"""Typed results: dataclasses that read as the JSON they are written as.

A result's fields are attributes (``scores.top1``); :meth:`Result.to_dict` is its JSON mapping (optional
fields that are None left out, as the mappings these functions returned before left them out), and
``result["top1"]``, ``"top1" in result`` and ``result.get("top1")`` read that mapping, for code written
against it.
"""

from __future__ import annotations

import dataclasses
from typing import Any


class Result:
    """The mapping interface of a result dataclass (see the module's description)."""

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None or f.default is dataclasses.MISSING}

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __contains__(self, key: str) -> bool:
        return key in self.to_dict()

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def keys(self):
        return self.to_dict().keys()


__all__ = ["Result"]
