"""tests/hf run offline (no Hugging Face Hub); each module skips when the hf extra is not installed."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
