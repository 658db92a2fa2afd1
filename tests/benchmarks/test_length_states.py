"""benchmarks/length_states.py measures how far a state moves along a language's cycle, and reads a saved (abab)*
model's labels as the task runner scored them."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hope.errors import HopeError
from hope.tasks.config import TaskRunConfig
from hope.tasks.runner import QUICK_MODEL, run_task

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "length_states.py"
_SPEC = importlib.util.spec_from_file_location("length_states", _PATH)
length_states = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(length_states)


def test_cycle_change_and_novelty_by_hand():
    """Period 2, longest training prefix 3: a state that settles into a 2-cycle from t = 2 on, then leaves it."""
    cycle = {0: [1.0, 0.0], 1: [0.0, 1.0]}
    hidden = np.array([[2.0, 0.0], [0.0, 2.0]] + [cycle[t % 2] for t in range(2, 6)] + [[1.0, 0.5]])
    found = length_states.cycle_measures(hidden, period=2, longest=3)
    assert found["cycle_change"] == pytest.approx([0.5, 0.5, 0.0, 0.0, 0.5])  # t = 2 .. 6
    # t = 4, 5 meet a state of their phase at a training prefix (t = 2, 3); t = 6 is 0.5 from [1, 0] (t = 2)
    assert found["novelty"] == pytest.approx([0.0, 0.0, 0.5])


def test_the_script_reads_a_saved_run_as_the_runner_scored_it(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run_task(TaskRunConfig(task="formal_abab_star", arch="gated-deltanet", steps=3, batch_size=2, eval_examples=4,
                           eval_batch_size=4, answer_rows=4, progress=False, save_model=True, model=QUICK_MODEL,
                           out=str(run)))
    monkeypatch.setattr(sys, "argv", ["length_states.py", "--runs", str(run), "--docs", str(tmp_path / "docs"),
                                      "--name", "states"])
    length_states.main()
    written = json.loads((tmp_path / "docs" / "states.json").read_text())
    assert (written["longest_training_string"], written["period"], written["length"]) == (48, 4, 100)
    [[scores]] = written["models"].values()
    assert scores["member"] == [t % 4 == 0 for t in range(101)]
    assert len(scores["cycle_change"]) == 97 and len(scores["novelty"]) == 52
    for line in (run / "answers.jsonl").read_text().splitlines():  # every scored string is a prefix of the one read
        [answer] = json.loads(line)["answers"]
        right = [e == p for e, p in zip(answer["expected"], answer["predicted"])]
        assert right == scores["right"][: len(right)]
    monkeypatch.setattr(sys, "argv", ["length_states.py", "--runs", str(run), "--length", "40", "--docs",
                                      str(tmp_path / "docs"), "--name", "states"])
    with pytest.raises(HopeError, match="longest training string"):
        length_states.main()


@pytest.mark.parametrize("arch,overrides", [
    ("gated-deltanet", {}),
    ("hope", {"memory": "linear", "objective": "dot", "self_targets": False}),
    ("hope", {"memory": "linear", "objective": "dot", "self_targets": False, "proximal": False}),
])
def test_write_eigenvalues_are_the_writes_eigenvalues_along_the_key(arch, overrides):
    """Each token's write, applied to the identity with a zero value, is the matrix ``alpha I - eta' k k^T``: its
    lowest eigenvalue (by eigvalsh) is the script's (for Hope through the memory bank's own fold)."""
    import torch

    from hope.models import make_config
    from hope.models.lm import LanguageModel

    torch.manual_seed(0)
    model = LanguageModel(make_config(arch, None, vocab_size=16, d_model=16, n_layers=1, n_heads=2, **overrides)).double()
    for name, parameter in model.named_parameters():  # gates and steps spread widely, some writes below zero
        if "gates" in name or "readout" in name:
            torch.nn.init.normal_(parameter, std=2.0)
    ids = torch.randint(0, 16, (1, 9))
    found = length_states.write_eigenvalues(model, ids)
    assert found.shape == (1, 9, 2) and (found < 0).any() and (found > 0).any()
    mixer, inputs = model.blocks[0].mixer, []
    hook = mixer.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    model(ids)
    hook.remove()
    d = mixer.head_dim
    if arch == "gated-deltanet":
        qkv, _ = mixer.conv(mixer.qkv(inputs[0]))
        keys = torch.nn.functional.normalize(qkv.view(1, 9, 3, 2, d)[:, :, 1], dim=-1)
        retention, step = torch.sigmoid(mixer.gates(inputs[0])).split(2, dim=-1)
        writes = retention[..., None, None] * torch.eye(d) - step[..., None, None] * keys[..., :, None] * keys[..., None, :]
    else:
        static = mixer.static(inputs[0]).view(1, 9, -1, 2, d)  # the static query
        features, _ = mixer._features(mixer._memory_inputs(inputs[0]), static, mixer.banks["proj"].shared(), None)
        writes = torch.stack([
            mixer.banks["mem"].fold({"w": torch.eye(d, dtype=torch.float64).expand(1, 2, d, d)},
                                    features["k"][:, t:t + 1], torch.zeros_like(features["k"][:, t:t + 1]),
                                    features["alpha"][:, t:t + 1], features["eta"][:, t:t + 1])[1]["w"]
            for t in range(9)], dim=1)
    torch.testing.assert_close(torch.linalg.eigvalsh(writes.detach())[..., 0].numpy(), found[0][None], rtol=1e-5, atol=1e-5)


def test_write_eigenvalues_only_for_delta_rule_matrices():
    import torch

    from hope.models import make_config
    from hope.models.lm import LanguageModel

    for arch, overrides in [("hope", {}), ("hope", {"memory": "linear", "objective": "dot"}), ("transformer", {})]:
        model = LanguageModel(make_config(arch, None, vocab_size=16, d_model=16, n_layers=1, n_heads=2, **overrides))
        assert length_states.write_eigenvalues(model, torch.randint(0, 16, (1, 5))) is None
