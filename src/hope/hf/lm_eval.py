"""lm-eval on a hope model: log-likelihood, rolling log-likelihood and generate-until requests through
``lm_eval``'s ``HFLM`` wrapped around :class:`hope.hf.HopeForCausalLM` (README, "Hugging Face").

Requests run one at a time (batch size 1): a hope model reads every token into its state, so the left padding of
batched generation is refused (``hope.hf.modeling``). lm-eval's default window for rolling log-likelihood is 2,048
tokens; the model itself has no length limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from hope.data.tokenizer import Tokenizer
from hope.errors import HopeError
from hope.hf.modeling import HopeForCausalLM
from hope.hf.tokenizer import to_hf_tokenizer
from hope.models import LanguageModel


def run_lm_eval(model: LanguageModel, tokenizer: Tokenizer, tasks: list[str], include_path: Path | None = None,
                limit: int | None = None, log_samples: bool = False) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` on ``model``; tasks from lm-eval's registry and the YAML files under
    ``include_path``. Returns lm-eval's result dict (``results`` per task; ``samples`` with ``log_samples``)."""
    manager = TaskManager(include_path=str(include_path) if include_path is not None else None)
    unknown = [task for task in tasks if task not in manager.all_tasks]
    if unknown:
        raise HopeError(f"unknown lm-eval task(s): {', '.join(unknown)} (see `lm_eval ls tasks`; local YAML tasks need "
                        f"--lm-eval-include DIR)")
    hf = HopeForCausalLM.from_hope(model).eval()
    lm = HFLM(pretrained=hf, tokenizer=to_hf_tokenizer(tokenizer), backend="causal", batch_size=1, device=str(hf.device))
    return simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, log_samples=log_samples)
