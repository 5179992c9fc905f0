"""What every study writes: JSON and CSV numbers, PNG figures, and a Markdown report that
links the figures by relative path, so a study directory can be moved or committed whole."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

from .._io import atomic_path, atomic_write_text, save_png
from ..errors import MissingFileError, UsageError


def pyplot():
    """matplotlib's pyplot on the file-only backend (studies run on servers without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_json(path: Union[str, Path], data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def read_json(path: Union[str, Path]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UsageError(f"{path} is not valid JSON: {error}") from None


def write_csv(path: Union[str, Path], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def write_report(path: Union[str, Path], title: str, sections: Sequence[str]) -> Path:
    path = Path(path)
    atomic_write_text(path, f"# {title}\n\n" + "\n\n".join(s.strip() for s in sections if s) + "\n")
    return path


def line_data(figure) -> dict[str, tuple[list[float], list[float]]]:
    """The (x, y) of every labelled line drawn in a figure, keyed by label: what the reader
    of the PNG sees, for checking against the JSON the figure was drawn from."""
    lines = {}
    for axis in figure.axes:
        for line in axis.get_lines():
            label = line.get_label()
            if label and not label.startswith("_"):
                lines[label] = ([float(v) for v in line.get_xdata()], [float(v) for v in line.get_ydata()])
    return lines


def save_figure(figure, png: Union[str, Path]) -> dict[str, tuple[list[float], list[float]]]:
    """Lay out, write and close a figure; returns its :func:`line_data`."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    lines = line_data(figure)
    save_png(figure, png)
    plt.close(figure)
    return lines
