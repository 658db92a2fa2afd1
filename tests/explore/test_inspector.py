"""The inspector (hope.explore.inspector): readings of a tiny checkpoint, and bad input as a message, never a crash."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hope.checkpoint import save_checkpoint
from hope.data.tokenizer import BytesTokenizer
from hope.explore.inspector import MAX_TOKENS, inspect_handler, inspect_text, load_handler
from hope.models import build

TEXT = "The cat sat on the mat. " * 4


def tiny(arch: str):
    """Short CMS periods (the defaults step past 512 tokens): the CMS steps inside the inspected text."""
    torch.manual_seed(0)
    periods = {"cms_periods": (32, 64, 128)} if arch == "hope" else {}
    return build(arch, "tiny", vocab_size=257, d_model=32, n_layers=2, n_heads=2, **periods)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("inspect") / "ckpt", tiny("hope"), BytesTokenizer())


def test_hope_readings_match_one_pass_and_hold_gates():
    model, ids = tiny("hope"), BytesTokenizer().encode(TEXT * 2)
    result = inspect_text(model, ids)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    reference = F.cross_entropy(logits[0, :-1], torch.tensor(ids[1:]), reduction="none")
    assert torch.allclose(result["loss_on"], reference, atol=1e-5)  # piece by piece = one pass
    assert result["loss_off"] is not None and not torch.allclose(result["loss_off"], result["loss_on"])
    assert result["eta"].shape == (2, 2, len(ids))
    missing = result["eta"][0, 0].isnan().nonzero().flatten().tolist()
    chunk = model.config.chunk_size
    assert missing == [t for t in range(len(ids)) if t % chunk == chunk - 1]  # only each chunk's last token
    finite = result["eta"][~result["eta"].isnan()]
    assert ((finite > 0) & (finite < 1)).all() and not result["alpha"][:, :, :5].isnan().any()
    assert result["memory_norms"].shape == (len(result["positions"]), 2)
    assert set(result["cms_lr"]) == {"0", "1"} and result["cms_lr"]["0"] == pytest.approx([0.1] * 3, rel=1e-5)
    assert any(max(steps) > 0 for steps in result["cms_steps"].values()) and not result["notes"]


def test_transformer_says_what_is_not_shown():
    result = inspect_text(tiny("transformer"), BytesTokenizer().encode(TEXT))
    assert result["eta"] is None and result["loss_off"] is None and result["memory_norms"] is None
    assert len(result["notes"]) == 4 and all("transformer" in note for note in result["notes"])


def test_load_and_inspect_handlers(checkpoint):
    loaded, message = load_handler(str(checkpoint))
    assert loaded is not None and "hope" in message
    result, message = inspect_handler(loaded, TEXT)
    assert result["tokens"][:3] == ["T", "h", "e"] and "mean loss" in message


@pytest.mark.parametrize("path", ["", "/no/such/dir", __file__])
def test_unreadable_checkpoint_is_a_message(path):
    loaded, message = load_handler(path)
    assert loaded is None and message


def test_corrupt_checkpoint_is_a_message(checkpoint, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in checkpoint.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    loaded, message = load_handler(str(broken))
    assert loaded is None and "corrupt" in message


@pytest.mark.parametrize("text,expected", [("", "empty"), ("   \n", "empty"), ("a", "too short"),
                                           ("x" * (MAX_TOKENS + 1), "at most")])
def test_bad_text_is_a_message(checkpoint, text, expected):
    loaded, _ = load_handler(str(checkpoint))
    result, message = inspect_handler(loaded, text)
    assert result is None and expected in message


def test_inspect_before_load_and_model_failure(checkpoint):
    assert inspect_handler(None, TEXT) == (None, "Load a checkpoint first.")
    model, tokenizer, path = load_handler(str(checkpoint))[0]

    class Broken:
        def encode(self, text):
            raise RuntimeError("boom")

    result, message = inspect_handler((model, Broken(), path), TEXT)
    assert result is None and "boom" in message
    model.config.vocab_size = 10  # ids beyond the vocabulary
    result, message = inspect_handler((model, tokenizer, path), TEXT)
    assert result is None and "vocabulary" in message
