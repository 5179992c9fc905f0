"""Table 1 for any list of models: stage output sizes, block layouts, parameters and
multiply-adds, measured from the models themselves (``resnets.models.summary``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..models.summary import _human, format_table, summarize
from .degradation import check_models
from .report import markdown_table, write_json, write_report


def run_table(models: Sequence[str], out: Path, input_size: Optional[int] = None) -> dict:
    """Write ``table.md`` (one comparison table, then each model's own) and ``table.json``."""
    models = check_models(models)
    summaries = [summarize(name, input_size=input_size) for name in models]
    stage_names = []
    for s in summaries:
        for stage in s["stages"]:
            if stage["name"] not in stage_names:
                stage_names.append(stage["name"])
    rows = []
    for s in summaries:
        stages = {stage["name"]: stage for stage in s["stages"]}
        cells = []
        for name in stage_names:
            stage = stages.get(name)
            if stage is None:
                cells.append("-")
            elif stage["blocks"]:
                cells.append(f"[{'; '.join(stage['layers'])}] x {stage['blocks']} "
                             f"({'x'.join(map(str, stage['output_size']))})")
            else:
                cells.append(f"{'; '.join(stage['layers'])} ({'x'.join(map(str, stage['output_size']))})")
        rows.append((s["name"], s["depth"], *cells, f"{s['params']:,}", _human(s["macs"]),
                     "x".join(map(str, s["input_size"]))))
    header = ["model", "depth", *[f"{n} (output)" for n in stage_names], "parameters", "multiply-adds", "input"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "table.json", dict(study="table", input_size=input_size, models=summaries))
    write_report(out / "table.md", "Architectures (Table 1 layout)", [
        markdown_table(header, rows),
        *[format_table(s) for s in summaries],
    ])
    return dict(models=summaries, header=header, rows=rows)
