"""hope tasks run / quick / report: a run that must learn, the quick suite over every task, the CLI."""

import json

import numpy as np
import pytest
import torch

from hope.errors import HopeError
from hope.cli import main
from hope.eval.report import build_report, collect_results
from hope.tasks.config import TaskRunConfig
from hope.checkpoint import load_checkpoint
from hope.data.tokenizer import BytesTokenizer
from hope.tasks.runner import QUICK_MODEL, checkpoint_model, eval_settings, run_quick_suite, run_task
from hope.tasks.continual import continual_metrics
from hope.tasks.registry import TASKS, get_task


def test_a_run_learns_memorization_and_writes_its_files(tmp_path):
    config = TaskRunConfig(task="mad_memorization", out=str(tmp_path / "run"), steps=150, batch_size=16, lr=3e-3,
                           warmup_steps=10, eval_examples=32, model=dict(QUICK_MODEL), options={"vocab_size": 17},
                           progress=False)
    result = run_task(config)
    assert result["evals"]["base"]["item_accuracy"] == 1.0
    assert result["loss_curve"][-1][1] < result["loss_curve"][0][1] / 10
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["evals"] == result["evals"] and saved["arch"] == "transformer"
    assert "| base | 100.0 |" in (tmp_path / "run" / "results.md").read_text()
    assert (tmp_path / "run" / "accuracy.png").is_file()
    answers = [json.loads(line) for line in (tmp_path / "run" / "answers.jsonl").read_text().splitlines()]
    assert [row["row"] for row in answers] == list(range(16)) and {row["setting"] for row in answers} == {"base"}
    assert "first 16 rows of each setting: [answers.jsonl](answers.jsonl)" in (tmp_path / "run" / "results.md").read_text()
    assert all(a["right"] and a["predicted"] == a["expected"] for row in answers for a in row["answers"])


def test_answers_are_the_generators_answers_beside_the_models(tmp_path):
    """A text task's answers.jsonl: decoded text, one entry per needle asked for, the expected ones those the
    generator put in the row (its ``info``), the first ``answer_rows`` rows of each setting."""
    config = TaskRunConfig(task="niah_multiquery", out=str(tmp_path / "run"), steps=1, batch_size=2,
                           eval_examples=5, eval_batch_size=2, answer_rows=3, lengths=(720,),
                           options={"length": 720}, model=dict(QUICK_MODEL), progress=False)
    run_task(config)
    answers = [json.loads(line) for line in (tmp_path / "run" / "answers.jsonl").read_text().splitlines()]
    assert [row["row"] for row in answers] == [0, 1, 2]
    (label, overrides), = eval_settings(get_task("niah_multiquery"), (720,)).items()
    assert {row["setting"] for row in answers} == {label}
    task = get_task("niah_multiquery").build(BytesTokenizer(), **{"length": 720, **overrides})
    rng = np.random.default_rng([0, 1, 0])
    infos = task.batch(rng, 2).info + task.batch(rng, 2).info
    for row, info in zip(answers, infos):
        assert [a["expected"].strip() for a in row["answers"]] == info["answers"]
        assert all(isinstance(a["predicted"], str) and a["right"] == (a["predicted"] == a["expected"])
                   for a in row["answers"])


def test_answers_outside_the_tokenizer_are_token_ids(tmp_path, intent_data_dir):
    """The intents' labels are tokens of the task, past the tokenizer's vocabulary: written as ids, not as text."""
    config = TaskRunConfig(task="in_context_clinc150", out=str(tmp_path / "run"), steps=1, batch_size=2,
                           eval_examples=2, answer_rows=2, data_dir=str(intent_data_dir), model=dict(QUICK_MODEL),
                           progress=False)
    run_task(config)
    rows = [json.loads(line) for line in (tmp_path / "run" / "answers.jsonl").read_text().splitlines()]
    expected = [a["expected"] for row in rows for a in row["answers"]]
    assert expected and all(isinstance(ids, list) and len(ids) == 1 and ids[0] > BytesTokenizer.vocab_size
                            for ids in expected)


def test_answer_rows_zero_writes_no_answers_and_negative_is_refused(tmp_path):
    with pytest.raises(HopeError, match="answer-rows must be at least 0"):
        TaskRunConfig(task="mad_memorization", out=str(tmp_path / "bad"), answer_rows=-1)
    config = TaskRunConfig(task="mad_memorization", out=str(tmp_path / "run"), steps=1, batch_size=2, eval_examples=2,
                           answer_rows=0, model=dict(QUICK_MODEL), progress=False)
    run_task(config)
    assert not (tmp_path / "run" / "answers.jsonl").exists()
    assert "answers.jsonl" not in (tmp_path / "run" / "results.md").read_text()


@pytest.mark.slow
def test_quick_suite_runs_every_task(tmp_path, intent_data_dir):
    results, skipped = run_quick_suite(["transformer"], str(tmp_path / "quick"), data_dir=str(intent_data_dir),
                                       progress=False)
    assert skipped == []
    assert sorted(r["task"] for r in results) == sorted(TASKS)
    for result in results:
        if result["family"] == "continual":
            matrix = np.array(result["matrix"])
            assert matrix.shape == (len(result["stages"]),) * 2
            assert result["continual"] == pytest.approx(continual_metrics(matrix, result["metric"] == "accuracy"), abs=1e-4)
        elif result["family"] == "stream":
            assert set(result["evals"]) == {"carried", "reset"}
            assert all(0.0 < s["loss"] < 10.0 and s["rows"] == 2 for s in result["evals"].values())
        else:
            assert set(result["evals"]) == set(eval_settings(get_task(result["task"]), tuple(result["config"]["lengths"])))
            assert all(0.0 <= s["item_accuracy"] <= 1.0 and s["examples"] == 4 for s in result["evals"].values())
    hope_results, hope_skipped = run_quick_suite(["hope", "bdh"], str(tmp_path / "quick"),
                                                 tasks=["formal_parity", "mad_compression"], progress=False)
    assert len(hope_results) == 4 and not hope_skipped
    report = build_report([tmp_path / "quick"], tmp_path / "docs" / "results.md", command="test")
    for family in ("recall", "mad", "niah", "babilong", "formal", "continual", "in_context", "stream"):
        assert f"## {family}" in report and (tmp_path / "docs" / f"results_{family}.png").is_file()
    assert "| hope (tiny, d_model=32, n_heads=2, n_layers=2) |" in report
    assert "dyck2 bin1" in report and "single_1 2K" in report and "clinc150 forget" in report
    assert "Training: 3 steps x 4 rows, lr 0.001 (" in report
    assert "Training: 1 step per stage x 4 rows, lr 0.001, max_test_per_class=2, max_train_per_class=2 (" in report


def test_eval_settings_from_lengths():
    assert eval_settings(get_task("formal_dyck1"), (100, 50)) == {
        "1-50": {"min_length": 1, "max_length": 50}, "51-100": {"min_length": 51, "max_length": 100}}
    assert eval_settings(get_task("niah_single_1"), (4096, 1000)) == {"4K": {"length": 4096}, "1000": {"length": 1000}}
    assert eval_settings(get_task("niah_single_1"), ()) == get_task("niah_single_1").evals
    with pytest.raises(HopeError, match="fixed lengths"):
        eval_settings(get_task("mad_compression"), (64,))


def test_cli_list_run_and_errors(tmp_path, capsys):
    assert main(["tasks", "list"]) == 0
    assert "formal_shuffle2" in capsys.readouterr().out
    out = tmp_path / "cli"
    code = main(["tasks", "run", "formal_aa_star", "--out", str(out), "--steps", "2", "--eval-examples", "2",
                 "--model", "d_model=32", "--model", "n_layers=1", "--model", "n_heads=2", "--length", "20", "40"])
    assert code == 0 and "formal_aa_star transformer: 1-20" in capsys.readouterr().out
    assert main(["tasks", "report", str(out), "--out", str(tmp_path / "r.md")]) == 0
    assert len(collect_results([out])) == 1
    assert main(["tasks", "run", "nosuchtask", "--out", str(out)]) == 2
    assert "unknown task 'nosuchtask'" in capsys.readouterr().err
    assert main(["tasks", "run", "mqar", "--out", str(out), "--model", "colour=3"]) == 2
    assert "colour" in capsys.readouterr().err
    assert main(["tasks", "report", str(tmp_path / "empty"), "--out", str(tmp_path / "x.md")]) == 2
    assert main(["tasks", "run", "continual_clinc150", "--out", str(tmp_path / "clinc"), "--data-dir", str(tmp_path)]) == 2
    assert "--data-dir" in capsys.readouterr().err
    before = (out / "result.json").read_bytes()
    assert main(["tasks", "run", "formal_aa_star", "--out", str(out), "--steps", "2"]) == 2
    assert "already holds a result" in capsys.readouterr().err and (out / "result.json").read_bytes() == before


def test_cms_outer_periods_hold_back_every_step_of_a_task_run(tmp_path, monkeypatch):
    from hope.optim.cms_outer import CMSOuterPeriods

    calls = []
    real = CMSOuterPeriods.hold_back
    monkeypatch.setattr(CMSOuterPeriods, "hold_back", lambda self: calls.append(self.periods) or real(self))
    config = TaskRunConfig(task="mad_compression", arch="hope", out=str(tmp_path / "run"), steps=3, batch_size=2,
                           eval_examples=2, model=dict(QUICK_MODEL), cms_outer_periods=(1, 2, 4), progress=False)
    result = run_task(config)
    assert calls == [(1, 2, 4)] * 3 and result["config"]["cms_outer_periods"] == (1, 2, 4)
    with pytest.raises(HopeError, match="one period per level"):
        run_task(TaskRunConfig(**{**config.__dict__, "cms_outer_periods": (1, 2), "out": str(tmp_path / "bad")}))


def test_cli_runs_several_seeds_into_their_own_folders_and_the_report_pools_them(tmp_path, capsys):
    out = tmp_path / "seeds"
    code = main(["tasks", "run", "formal_aa_star", "--out", str(out), "--steps", "2", "--eval-examples", "2",
                 "--model", "d_model=32", "--model", "n_layers=1", "--model", "n_heads=2", "--length", "20",
                 "--seed", "0", "1"])
    assert code == 0 and "(seed 1)" in capsys.readouterr().out
    assert [r["seed"] for r in collect_results([out / "seed-0", out / "seed-1"])] == [0, 1]
    report = build_report([out], tmp_path / "r.md")
    assert " | 0, 1 |" in report and " ± " in report


def test_a_saved_model_evaluates_again_alike_and_takes_probes_that_keep_its_weights(tmp_path):
    common = dict(task="niah_single_1", eval_examples=2, eval_batch_size=2, eval_chunk=128, lengths=(256, 512),
                  options={"length": 256}, progress=False)
    trained = run_task(TaskRunConfig(**common, arch="hope", out=str(tmp_path / "train"), steps=2, batch_size=2,
                                     model=dict(QUICK_MODEL), save_model=True))
    saved = str(tmp_path / "train" / "model")
    again = run_task(TaskRunConfig(**common, out=str(tmp_path / "again"), steps=0, checkpoint=saved))
    assert again["arch"] == "hope" and again["loss_curve"] == []
    assert {k: v["token_accuracy"] for k, v in again["evals"].items()} == \
        {k: v["token_accuracy"] for k, v in trained["evals"].items()}
    probe = TaskRunConfig(**common, out=str(tmp_path / "frozen"), steps=0, checkpoint=saved,
                          model={"test_time_learning": False})
    model, _ = checkpoint_model(probe, torch.device("cpu"))
    loaded, _, _ = load_checkpoint(saved)
    assert not model.config.test_time_learning and loaded.config.test_time_learning
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert run_task(probe)["model_overrides"] == {"test_time_learning": False}
    with pytest.raises(HopeError, match="changes the weights of checkpoint"):
        run_task(TaskRunConfig(**common, out=str(tmp_path / "wider"), steps=0, checkpoint=saved,
                               model={"d_model": 64}))
    with pytest.raises(HopeError, match="0 evaluates a --checkpoint"):
        TaskRunConfig(**common, out=str(tmp_path / "none"), steps=0)
    with pytest.raises(HopeError, match="--save-model applies to sequence and stream tasks"):
        TaskRunConfig(task="continual_sotu_eras", out=str(tmp_path / "eras"), save_model=True)


def test_a_model_of_token_ids_is_saved_without_a_tokenizer_and_evaluates_again_alike(tmp_path):
    common = dict(task="mqar", eval_examples=4, eval_batch_size=4, lengths=(32,), progress=False,
                  options={"length": 32, "num_kv_pairs": 2, "vocab_size": 16})
    trained = run_task(TaskRunConfig(**common, arch="hope", out=str(tmp_path / "train"), steps=2, batch_size=2,
                                     model=dict(QUICK_MODEL), save_model=True))
    saved = tmp_path / "train" / "model"
    assert not (saved / "tokenizer.json").exists()
    model, tokenizer, _ = load_checkpoint(saved, text=False)
    assert tokenizer is None and model.config.arch == "hope"
    again = run_task(TaskRunConfig(**common, out=str(tmp_path / "again"), steps=0, checkpoint=str(saved)))
    assert {k: v["token_accuracy"] for k, v in again["evals"].items()} == \
        {k: v["token_accuracy"] for k, v in trained["evals"].items()}
    with pytest.raises(HopeError, match="has no tokenizer: it models token ids"):
        run_task(TaskRunConfig(task="niah_single_1", out=str(tmp_path / "text"), steps=0, checkpoint=str(saved),
                               progress=False))


def test_an_in_context_run_with_fewer_stages_is_scored_on_the_stages_its_rows_have(tmp_path, intent_data_dir):
    config = TaskRunConfig(task="in_context_clinc150", out=str(tmp_path / "run"), steps=1, batch_size=2,
                           eval_examples=2, model=dict(QUICK_MODEL), data_dir=str(intent_data_dir), progress=False,
                           options={"num_stages": 2, "classes_per_stage": 2, "shots": 1, "queries_per_stage": 1})
    result = run_task(config)
    assert set(result["evals"]) == {"all", "stage1", "stage2"}
    assert all(scores["answer_loss"] > 0 for scores in result["evals"].values())


def test_cms_levels_whose_period_the_rows_do_not_pass_get_no_learning_rate_gradient_and_a_warning(tmp_path, capsys):
    from hope.errors import HopeWarning
    from hope.models import build
    from hope.tasks.runner import CMSReach

    torch.manual_seed(0)
    model = build(arch="hope", size="tiny", vocab_size=16, **QUICK_MODEL, cms_periods=(8, 16))
    ids = torch.randint(0, 16, (2, 16))
    torch.nn.functional.cross_entropy(model(ids).logits.flatten(0, 1), ids.flatten()).backward()
    grads = torch.stack([block.channel.log_lr.grad for block in model.blocks])
    assert (grads[:, 0] != 0).all() and (grads[:, 1] == 0).all()  # period 16 steps at position 16: not in the row

    reach = CMSReach(model.cms_periods)
    with pytest.warns(HopeWarning, match=r"CMS periods \[16\] are not shorter than the training rows \(16 tokens\)"):
        reach.see(ids)
    reach.see(torch.zeros(2, 17, dtype=torch.long))
    assert reach.unreached == []

    out = tmp_path / "run"
    assert main(["tasks", "run", "mad_memorization", "--arch", "hope", "--out", str(out), "--steps", "1",
                 "--eval-examples", "2", "--no-progress", "--model", "d_model=32", "--model", "n_layers=1",
                 "--model", "n_heads=2", "--model", "cms_periods=[64,256]"]) == 0
    err = capsys.readouterr().err
    assert "hope: warning: CMS periods [64, 256] are not shorter than the training rows" in err
    result = json.loads((out / "result.json").read_text())
    assert result["cms_periods_not_trained"] == [64, 256]
    assert "never stepped in training (periods not shorter than the training rows): 64, 256" in \
        (out / "results.md").read_text()
    assert "CMS periods that never stepped in training (not shorter than the rows): 64, 256 (1 run)." in \
        build_report([out], tmp_path / "r.md")
