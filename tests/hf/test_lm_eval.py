"""lm-eval on hope models, offline: its numbers equal the model's own scoring of the same items."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hope.checkpoint import load_checkpoint, save_checkpoint
from hope.cli import main
from hope.data.tokenizer import BytesTokenizer
from hope.generate import generate
from hope.models import build

pytest.importorskip("transformers", reason="needs the hf extra: pip install -e '.[hf]'")
pytest.importorskip("lm_eval", reason="needs the hf extra (lm-eval): pip install -e '.[hf]'")
pytestmark = pytest.mark.slow

ITEMS = [
    {"context": "The cat sat on the", "choices": [" mat", " dog", " moon"], "label": 0,
     "text": "The cat sat on the mat. It was a warm day and the cat was happy."},
    {"context": "One, two,", "choices": [" three", " four"], "label": 0, "text": "One, two, three, four, five, six."},
    {"context": "Water is", "choices": [" wet", " dry"], "label": 0, "text": "Water is wet; fire is hot."},
]


@pytest.fixture(scope="session")
def lm_eval_tasks(tmp_path_factory) -> Path:
    """A folder of three lm-eval tasks over the same local JSONL file, one per request type:
    ``hope_mc`` (log-likelihood), ``hope_roll`` (rolling log-likelihood), ``hope_gen`` (generate-until)."""
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    (folder / "items.jsonl").write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {folder}/items.jsonl\ntest_split: test\n"
    (folder / "mc.yaml").write_text(
        f"task: hope_mc\n{common}output_type: multiple_choice\ndoc_to_text: '{{{{context}}}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\ntarget_delimiter: ''\n"
        "metric_list:\n  - metric: acc\n")
    (folder / "roll.yaml").write_text(
        f"task: hope_roll\n{common}output_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{{{text}}}}'\n"
        "metric_list:\n  - metric: word_perplexity\n    aggregation: weighted_perplexity\n    higher_is_better: false\n")
    (folder / "gen.yaml").write_text(
        f"task: hope_gen\n{common}output_type: generate_until\ndoc_to_text: '{{{{context}}}}'\n"
        "doc_to_target: '{{choices[0]}}'\ngeneration_kwargs:\n  until: ['.']\n  max_gen_toks: 8\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n")
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A Hope model whose CMS learns in context (periods 8, 16: inside every item), with the byte tokenizer."""
    torch.manual_seed(0)
    model = build("hope", None, vocab_size=257, d_model=32, n_layers=2, n_heads=2, cms_periods=(8, 16))
    path = tmp_path_factory.mktemp("lm_eval") / "ckpt"
    save_checkpoint(path, model, BytesTokenizer())
    return path


def own_scores(path):
    """Per item: the log-probability of each choice after its context, of the text after <|endoftext|>, and the
    greedy continuation of the context cut at the first "." (8 tokens at most): computed directly with the model."""
    model, tok, _ = load_checkpoint(path)
    model.eval()

    def logprob(context, continuation):
        ids = torch.tensor([context + continuation])
        with torch.no_grad():
            logp = model(ids).logits[0, len(context) - 1:-1].log_softmax(-1)
        return logp.gather(-1, torch.tensor(continuation)[:, None]).sum().item()

    mc = [[logprob(tok.encode(item["context"]), tok.encode(choice)) for choice in item["choices"]] for item in ITEMS]
    roll = [logprob([tok.eot_id], tok.encode(item["text"])) for item in ITEMS]
    gen = []
    for item in ITEMS:
        ids = torch.tensor([tok.encode(item["context"])])
        gen.append(tok.decode(generate(model, ids, 8, temperature=0)[0, ids.shape[1]:].tolist()).split(".")[0])
    return mc, roll, gen


def flat(nested):
    return [x for row in nested for x in row]


def responses(samples):
    """lm-eval's logged responses per task, in document order."""
    by_task = {}
    for task, docs in samples.items():
        docs = sorted(docs, key=lambda s: s["doc_id"])
        if task == "hope_mc":
            by_task[task] = [[float(resp[0][0]) for resp in s["resps"]] for s in docs]
        else:
            by_task[task] = [s["resps"][0][0] for s in docs]
    return by_task


def test_hope_eval_lm_eval_matches_the_models_own_scores(checkpoint, lm_eval_tasks, tmp_path, capsys):
    from hope.hf.lm_eval import run_lm_eval

    model, tok, _ = load_checkpoint(checkpoint)
    result = run_lm_eval(model, tok, ["hope_mc", "hope_roll", "hope_gen"], lm_eval_tasks, log_samples=True)
    got = responses(result["samples"])
    mc, roll, gen = own_scores(checkpoint)
    assert flat(got["hope_mc"]) == pytest.approx(flat(mc), abs=1e-4)
    assert got["hope_roll"] == pytest.approx(roll, abs=1e-4)
    assert got["hope_gen"] == gen
    accuracy = sum(scores.index(max(scores)) == item["label"] for scores, item in zip(mc, ITEMS)) / len(ITEMS)
    assert result["results"]["hope_mc"]["acc,none"] == pytest.approx(accuracy)

    out = tmp_path / "lm_eval.json"
    assert main(["eval", "--checkpoint", str(checkpoint), "--lm-eval", "hope_mc", "--lm-eval-include",
                 str(lm_eval_tasks), "--out", str(out), "--threads", "1"]) == 0
    assert json.loads(out.read_text())["results"]["hope_mc"]["acc,none"] == pytest.approx(accuracy)
    assert "hope_mc" in capsys.readouterr().out


def test_lm_eval_cli_loads_an_exported_folder_with_trust_remote_code(checkpoint, lm_eval_tasks, tmp_path):
    hf_dir = tmp_path / "hf"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(hf_dir)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={hf_dir},trust_remote_code=True",
         "--tasks", "hope_mc", "--include_path", str(lm_eval_tasks), "--device", "cpu", "--batch_size", "1",
         "--output_path", str(tmp_path / "out"), "--log_samples"],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    samples = next((tmp_path / "out").rglob("samples_hope_mc_*.jsonl")).read_text().splitlines()
    got = responses({"hope_mc": [json.loads(line) for line in samples]})["hope_mc"]
    assert flat(got) == pytest.approx(flat(own_scores(checkpoint)[0]), abs=1e-4)


def test_unknown_lm_eval_task_is_one_line(checkpoint):
    result = subprocess.run([sys.executable, "-m", "hope", "eval", "--checkpoint", str(checkpoint), "--lm-eval",
                             "no_such_task_xyz"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no_such_task_xyz" in result.stderr
