"""Every recipe in recipes/ is a valid ``hope train --config`` file, and its first steps run on CPU as written
(FSDP2 on a one-rank group, bf16, activation checkpointing), with short sequences and small batches, at a tiny
width where the real one does not fit a test."""

from pathlib import Path

import pytest

from hope.cli import build_parser
from hope.cli.train import config_from_args
from hope.train.lm import train

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))
TINY_WIDTH = ["--model", "d_model=32", "--model", "n_layers=2", "--model", "n_heads=2"]
REAL_WIDTH_FITS = ("small",)


def test_the_recipes_are_there():
    assert [p.stem for p in RECIPES] == ["1.3b", "760m", "small"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_first_steps_run_on_cpu(recipe, tmp_path, text_folder):
    args = build_parser().parse_args([
        "train", "--config", str(recipe), "--out", str(tmp_path / "run"), "--data", str(text_folder),
        "--tokenizer", "bytes", "--seq-len", "32", "--batch-size", "4", "--max-steps", "2", "--eval-windows", "2",
        "--no-progress", *([] if recipe.stem in REAL_WIDTH_FITS else TINY_WIDTH)])
    config = config_from_args(args)
    assert config.size == recipe.stem and config.optimizer == "adamw" and config.seq_len == 32
    result = train(config)
    assert result.step == 2 and result.validation["bits_per_byte"] > 0
