"""tests/hf need the hf extra; they run offline (no Hugging Face Hub)."""

import os

import pytest

pytest.importorskip("transformers", reason="needs the hf extra (transformers, lm-eval): pip install -e '.[hf]'")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
