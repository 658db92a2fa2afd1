import json

import pytest


@pytest.fixture
def intent_data_dir(tmp_path):
    """Tiny CLINC150 and Banking77 files in the real formats: six intents, a few queries each."""
    intents = [f"intent_{i}" for i in range(6)]
    rows = lambda split, n: [[f"{split} query {k} about {c}", c] for c in intents for k in range(n)]
    (tmp_path / "clinc150").mkdir()
    (tmp_path / "clinc150" / "data_full.json").write_text(json.dumps(
        {"train": rows("train", 4), "val": rows("val", 1), "test": rows("test", 2), "oos_train": [["x", "oos"]]}))
    (tmp_path / "clinc150" / "domains.json").write_text(json.dumps({"one": intents[:3], "two": intents[3:]}))
    (tmp_path / "banking77").mkdir()
    for split, n in (("train", 3), ("test", 2)):
        lines = ["text,category"] + [f'"{t}, really",{c}' for t, c in rows(split, n)]
        (tmp_path / "banking77" / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "banking77" / "categories.json").write_text(json.dumps(intents))
    return tmp_path
