"""Training and evaluation: recipes, the loop, checkpoints, distributed set-up, metrics."""

from .checkpoint import RunDirError, read_metrics
from .engine import TrainingDiverged, TrainOptions, train
from .evaluate import evaluate
from .recipe import Recipe, RecipeError, learning_rate, list_recipes, load_recipe

__all__ = ["Recipe", "RecipeError", "RunDirError", "TrainOptions", "TrainingDiverged", "evaluate", "learning_rate",
           "list_recipes", "load_recipe", "read_metrics", "train"]
