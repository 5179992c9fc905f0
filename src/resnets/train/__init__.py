"""Training and evaluation: recipes, the loop, run directories, checkpoints, distributed set-up, metrics."""

from .checkpoint import RunDirError, read_metrics
from .engine import TrainingDiverged, TrainingInterrupted, TrainResult
from .fused import FusedResult, train, train_fused
from ..scoring import evaluate
from .hooks import TrainHook
from .options import TrainOptions
from .recipe import Recipe, RecipeError, learning_rate, list_recipes, load_recipe

__all__ = ["FusedResult", "Recipe", "RecipeError", "RunDirError", "TrainHook", "TrainOptions", "TrainResult",
           "TrainingDiverged", "TrainingInterrupted", "evaluate", "learning_rate", "list_recipes", "load_recipe",
           "read_metrics", "train", "train_fused"]
