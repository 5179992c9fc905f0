"""The paper's evidence, regenerated: degradation (Figure 6), gradient flow, layer
responses (Figure 7) and architecture tables (Table 1). Each study writes PNG figures, the
JSON/CSV numbers behind them and a Markdown report into one directory."""

from .degradation import BUDGETS, Budget, DegradationConfig, plot_degradation, run_degradation
from .gradients import GradientConfig, plot_gradients, run_gradients
from .responses import ResponseConfig, plot_responses, run_responses
from .table import run_table

__all__ = ["BUDGETS", "Budget", "DegradationConfig", "GradientConfig", "ResponseConfig", "plot_degradation",
           "plot_gradients", "plot_responses", "run_degradation", "run_gradients", "run_responses", "run_table"]
