"""Named training recipes: the recommended one and the seed project's three models, each a TrainConfig preset.

`edgelesion train --recipe NAME` and `edgelesion cv --recipe NAME` start from one; options given on the command
line change it. The variants measured and not adopted are in docs/experiments.md, built on these by benchmarks/cv.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgelesion.errors import EdgelesionError
from edgelesion.train.config import TrainConfig


@dataclass(frozen=True)
class Recipe:
    """A named TrainConfig preset and what it is."""

    name: str
    summary: str
    config: TrainConfig
    record: str  # the benchmarks/results record of its cross-validation, or "" where none is kept


RECOMMENDED_RECIPE = "lite0-20ep"
RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "lite0-20ep",
            "the recommended recipe: EfficientNet-Lite0 from ImageNet, 3 head epochs then 17 of the whole network "
            "(cosine, BatchNorm frozen), class weights, label smoothing, online augmentation",
            TrainConfig.for_model("efficientnet-lite0"),
            "cv_lite0_20ep",
        ),
        Recipe(
            "seed-simple",
            "the seed project's model 1: a small CNN at 180 px, 20 epochs, no rebalancing",
            TrainConfig(model="seed-simple", rebalance="none"),
            "",
        ),
        Recipe(
            "seed-dropout",
            "the seed project's model 2: the CNN with dropout, 20 epochs, no rebalancing",
            TrainConfig(model="seed-dropout", rebalance="none"),
            "",
        ),
        Recipe(
            "seed-dropout-augmentor",
            "the seed project's model 3: the CNN with dropout, classes rebalanced by Augmentor copies",
            TrainConfig(model="seed-dropout", rebalance="augmentor"),
            "cv_model3",
        ),
    )
}


def recipe_config(name: str, **changes: Any) -> TrainConfig:
    """The TrainConfig of recipe `name`, with `changes` on top."""
    if name not in RECIPES:
        raise EdgelesionError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)} (edgelesion recipes)")
    return RECIPES[name].config.with_changes(**changes)


def format_recipes() -> str:
    """The recipes as `edgelesion recipes` lists them: name, model, summary; the recommended one marked."""
    lines = []
    for recipe in RECIPES.values():
        mark = "  (default)" if recipe.name == RECOMMENDED_RECIPE else ""
        lines.append(f"{recipe.name}{mark}\n  model {recipe.config.model}: {recipe.summary}")
        if recipe.record:
            lines.append(f"  cross-validated: benchmarks/results/{recipe.record}_*.md")
    return "\n".join(lines)
