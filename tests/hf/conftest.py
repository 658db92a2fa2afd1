import pytest

pytest.importorskip("transformers", reason="needs the hf extra (transformers, lm-eval): pip install -e '.[hf]'")
