import json

import pytest
import torch

from hope.checkpoint import flatten, load_checkpoint, save_checkpoint, unflatten
from hope.data.tokenizer import BytesTokenizer
from hope.errors import HopeError
from hope.models import build


@pytest.fixture
def saved(tmp_path):
    model = build("transformer", "tiny", vocab_size=257, d_model=32, n_layers=2, n_heads=2)
    save_checkpoint(tmp_path / "ckpt", model, BytesTokenizer(), {"step": 3, "opt": {0: {"m": torch.ones(2)}}})
    return model, tmp_path / "ckpt"


def test_round_trip(saved):
    model, path = saved
    loaded, tokenizer, state = load_checkpoint(path, with_trainer_state=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert loaded.head.weight is loaded.embed.weight
    assert state["step"] == 3 and torch.equal(state["opt"][0]["m"], torch.ones(2))
    assert tokenizer.vocab_size == 257


def test_flatten_round_trip_keeps_types():
    value = {"a": [1, 2.5, None, "x"], 3: (torch.arange(3), {"b": True}), "t": torch.zeros(2, 2)}
    skeleton, tensors = flatten(value)
    json.dumps(skeleton)
    back = unflatten(json.loads(json.dumps(skeleton)), tensors)
    assert back["a"] == [1, 2.5, None, "x"] and isinstance(back[3], tuple) and back[3][1] == {"b": True}
    assert torch.equal(back[3][0], torch.arange(3))


def test_rewriting_replaces_atomically_and_leaves_no_temp(saved, tmp_path):
    model, path = saved
    save_checkpoint(path, model, BytesTokenizer())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_manifest", "delete_config", "missing_dir"])
def test_damaged_checkpoints_are_clear_errors(saved, damage):
    _, path = saved
    weights = path / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[-5] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "delete_manifest":
        (path / "manifest.json").unlink()
    elif damage == "delete_config":
        (path / "config.json").unlink()
    else:
        path = path.with_name("nowhere")
    with pytest.raises(HopeError) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_weights_that_do_not_match_the_config(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["d_model"] = 64
    (path / "config.json").write_text(json.dumps(config))
    manifest = json.loads((path / "manifest.json").read_text())
    import hashlib

    manifest["config.json"] = hashlib.sha256((path / "config.json").read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(HopeError, match="do not match config.json"):
        load_checkpoint(path)


def test_weights_only_checkpoint_cannot_be_resumed(saved, tmp_path):
    model, _ = saved
    save_checkpoint(tmp_path / "weights", model, BytesTokenizer())
    with pytest.raises(HopeError, match="weights only"):
        load_checkpoint(tmp_path / "weights", with_trainer_state=True)


@pytest.mark.parametrize("arch", ["hope", "titans"])
def test_configs_saved_before_a_field_existed_keep_their_function(arch):
    """A saved config without a field added later (``LEGACY_VALUES``) gets the value that computes what the model
    did then, not the new default; a config that has the field keeps its value."""
    from hope.models.config import LEGACY_VALUES, config_from_dict

    saved = build(arch, "tiny", vocab_size=257).config.to_dict()
    legacy = LEGACY_VALUES[arch]
    assert any(saved[name] != value for name, value in legacy.items())
    old = config_from_dict({k: v for k, v in saved.items() if k not in legacy})
    assert {name: getattr(old, name) for name in legacy} == legacy
    assert config_from_dict(saved).to_dict() == saved


def test_a_model_of_token_ids_round_trips_without_a_tokenizer_and_is_refused_where_text_is_read(tmp_path):
    model = build("transformer", "tiny", vocab_size=16, d_model=32, n_layers=2, n_heads=2)
    save_checkpoint(tmp_path / "ids", model, None)
    assert not (tmp_path / "ids" / "tokenizer.json").exists()
    loaded, tokenizer, _ = load_checkpoint(tmp_path / "ids", text=False)
    assert tokenizer is None
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(HopeError, match="has no tokenizer: it models token ids"):
        load_checkpoint(tmp_path / "ids")


def test_a_listed_tokenizer_that_is_missing_is_an_incomplete_checkpoint(saved):
    _, path = saved
    (path / "tokenizer.json").unlink()
    with pytest.raises(HopeError, match="incomplete: tokenizer.json is missing"):
        load_checkpoint(path, text=False)
