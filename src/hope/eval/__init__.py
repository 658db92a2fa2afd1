"""Evaluation: loss, perplexity and bits per byte of a language model; tables and plots of task runs."""

from hope.eval.perplexity import EvalResult, evaluate_lm, evaluate_lm_streamed

__all__ = ["EvalResult", "evaluate_lm", "evaluate_lm_streamed"]
