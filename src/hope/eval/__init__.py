"""Evaluation: loss, perplexity and bits per byte; task runners and reports."""

from hope.eval.perplexity import EvalResult, evaluate_lm

__all__ = ["EvalResult", "evaluate_lm"]
