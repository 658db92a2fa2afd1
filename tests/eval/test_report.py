"""hope tasks report: runs of one model and task with several seeds are pooled as mean ± sd."""

import json
import statistics
from fractions import Fraction

import pytest

from hope.errors import HopeError
from hope.eval.report import _by_seed, build_report, common_parts, model_label, mqar_panels


def write(folder, seed, accuracy, arch="hope", task_options=None, model_overrides=None, **config):
    folder.mkdir(parents=True)
    result = {"task": "niah_single_1", "family": "niah", "arch": arch, "size": "tiny", "seed": seed,
              "model_overrides": model_overrides or {}, "task_options": task_options or {}, "params": 1,
              "evals": {"256": {"item_accuracy": accuracy}},
              "config": {"steps": 3, "batch_size": 2, "lr": 1e-3, "options": {}, **config}}
    (folder / "result.json").write_text(json.dumps(result))
    return result


def test_seeds_are_pooled_and_a_repeated_seed_is_replaced_by_the_later_path(tmp_path):
    write(tmp_path / "a" / "s0", 0, 0.10)
    write(tmp_path / "a" / "s1", 1, 0.30)
    write(tmp_path / "b" / "s1", 1, 0.50)
    write(tmp_path / "b" / "t0", 0, 0.70, arch="transformer")
    report = build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "r.md")
    sd = 100 * statistics.stdev([0.10, 0.50])
    assert f"| hope (tiny) | 30.0 ± {sd:.1f} | 0, 1 |" in report
    assert "| transformer (tiny) | 70.0 | 0 |" in report
    assert report.startswith("# Task results\n\n3 runs")


def test_the_training_loss_each_run_ended_at_is_pooled_beside_the_accuracy(tmp_path):
    for seed, curve in [(0, [[0, 9.0], [890, 7.0], [900, 2.0], [950, 1.0], [999, 3.0]]), (1, [[0, 9.0], [999, 4.0]])]:
        result = write(tmp_path / "a" / f"s{seed}", seed, 0.0)
        result["loss_curve"] = curve
        (tmp_path / "a" / f"s{seed}" / "result.json").write_text(json.dumps(result))
    report = build_report([tmp_path / "a"], tmp_path / "r.md")
    assert "Training loss, mean over each run's last 100 steps:" in report
    assert f"| hope (tiny) | 3.000 ± {statistics.stdev([2.0, 4.0]):.3f} |" in report


def test_evaluations_of_a_saved_model_are_not_called_training(tmp_path):
    write(tmp_path / "a" / "s0", 0, 0.5, steps=0, options={"length": 512})
    write(tmp_path / "b" / "s0", 0, 0.5, arch="transformer")
    report = build_report([tmp_path], tmp_path / "r.md")
    assert "Training: none, a saved model evaluated (--steps 0), length=512 (1 run); 3 steps x 2 rows, lr 0.001 (1 run)." \
        in report


def test_runs_without_a_loss_curve_get_no_loss_table(tmp_path):
    write(tmp_path / "a" / "s0", 0, 0.5)
    assert "Training loss" not in build_report([tmp_path / "a"], tmp_path / "r.md")


def test_a_saved_model_is_named_by_the_run_that_saved_it(tmp_path):
    probes = [{**write(tmp_path / f"s{seed}", seed, 0.1), "checkpoint": f"runs/probe/hope_seed{seed}/model"}
              for seed in (0, 2)]
    trained = {**write(tmp_path / "t", 0, 0.1), "checkpoint": "runs/lm/checkpoint"}
    other = {**write(tmp_path / "o", 0, 0.1), "checkpoint": "exported/tiny-hope"}
    seeds = [{**write(tmp_path / f"m{seed}", seed, 0.1), "checkpoint": f"runs/w256/seed-{seed}/model"} for seed in (0, 1)]
    assert [model_label(r) for r in probes + [trained, other] + seeds] == [
        "hope (tiny, from hope_seed0)", "hope (tiny, from hope_seed2)", "hope (tiny, from lm)", "hope (tiny, from tiny-hope)",
        "hope (tiny, from w256)", "hope (tiny, from w256)"]


def test_a_stream_run_is_labelled_by_its_window(tmp_path):
    sequence = write(tmp_path / "n", 0, 0.1, seq_len=256)
    stream = {**write(tmp_path / "s", 0, 0.1, seq_len=2048), "family": "stream"}
    assert model_label(sequence) == "hope (tiny)" and model_label(stream) == "hope (tiny, seq_len=2048)"


def test_outer_periods_are_part_of_the_model_label(tmp_path):
    plain = write(tmp_path / "p", 0, 0.1)
    outer = write(tmp_path / "o", 0, 0.2, cms_outer_periods=[1, 4, 16])
    assert model_label(plain) == "hope (tiny)"
    assert model_label(outer) == "hope (tiny, cms_outer_periods=1/4/16)"
    report = build_report([tmp_path], tmp_path / "r.md")
    assert "| hope (tiny) | 10.0 | 0 |" in report and "| hope (tiny, cms_outer_periods=1/4/16) | 20.0 | 0 |" in report


def test_runs_of_one_seed_with_other_task_options_are_not_silently_replaced(tmp_path):
    write(tmp_path / "a", 0, 0.1, task_options={"length": 256})
    write(tmp_path / "b", 0, 0.2, task_options={"length": 512})
    with pytest.raises(HopeError, match="different task options"):
        build_report([tmp_path], tmp_path / "r.md")


def test_label_parts_shared_by_every_run_are_stated_once():
    runs = [{"arch": arch, "size": "tiny", "model_overrides": {"d_model": 64, **extra}}
            for arch, extra in (("hope", {"cms_levels": 1}), ("titans", {}))]
    common = common_parts(runs)
    assert common == {"tiny", "d_model=64"}
    assert [model_label(r, common) for r in runs] == ["hope (cms_levels=1)", "titans"]


def test_suite_experiments_label_runs_apart_by_the_task_options_they_do_not_share():
    runs = [{"arch": "hope", "size": "tiny", "task": "stream_cipher", "seed": 0, "model_overrides": {"d_model": 64},
             "task_options": {"segment": 64, "alphabet": alphabet}} for alphabet in ("letters", "none")]
    common = common_parts(runs, options=True)
    assert common == {"tiny", "d_model=64", "segment=64"}
    assert [model_label(r, common, options=True) for r in runs] == ["hope (alphabet=letters)", "hope (alphabet=none)"]
    assert list(_by_seed(runs, common, options=True)) == [("stream_cipher", "hope (alphabet=letters)"),
                                                           ("stream_cipher", "hope (alphabet=none)")]
    with pytest.raises(HopeError, match="different task options"):
        _by_seed(runs, common_parts(runs))


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]])
def test_continual_rows_pool_their_metrics(tmp_path, seeds):
    for seed in seeds:
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        metrics = {"average": 0.2 + 0.1 * seed, "forgetting": 0.5, "backward_transfer": -0.5}
        (folder / "result.json").write_text(json.dumps({
            "task": "continual_banking77", "family": "continual", "arch": "hope", "size": "tiny", "seed": seed,
            "metric": "accuracy", "continual": metrics, "config": {"steps": 1, "batch_size": 2, "lr": 1e-3}}))
    report = build_report([tmp_path], tmp_path / "r.md")
    average = "20.0" if len(seeds) == 1 else "30.0 ± 10.0"
    forgetting = "50.0" if len(seeds) == 1 else "50.0 ± 0.0"
    assert f"| hope (tiny) | {average} | {forgetting} |" in report
    assert f"| {', '.join(map(str, seeds))} |" in report


def test_mqar_plot_has_a_panel_for_every_setting_that_two_cells_share():
    """paper-cpu's cells: 4 and 16 pairs at lengths 64 and 256, one pair per 16 tokens at 64, 128 and 256."""
    cells = {(model, length, pairs): [0.5] for model in ("hope", "transformer")
             for length, pairs in ((64, 4), (64, 16), (128, 8), (256, 4), (256, 16))}
    assert mqar_panels(cells) == [("pairs", 64), ("pairs", 256), ("length", 4), ("length", 16),
                                  ("density", Fraction(1, 16))]
    grid = {("hope", n, p): [0.5] for n in (64, 128, 256) for p in (4, 8, 16, 32, 64) if 4 * p <= n}
    assert mqar_panels(grid) == [("pairs", 64), ("pairs", 128), ("pairs", 256), ("length", 4), ("length", 8),
                                 ("length", 16), ("length", 32), ("density", Fraction(1, 32)),
                                 ("density", Fraction(1, 16)), ("density", Fraction(1, 8)), ("density", Fraction(1, 4))]
    assert mqar_panels({("hope", 64, 4): [1.0]}) == []


def test_answer_tokens_right_are_shown_only_where_they_differ_from_exact_match(tmp_path):
    for seed, tokens in [(0, 0.5), (1, 0.7)]:
        result = write(tmp_path / "a" / f"s{seed}", seed, 0.0)
        result["evals"]["256"]["token_accuracy"] = tokens
        (tmp_path / "a" / f"s{seed}" / "result.json").write_text(json.dumps(result))
    report = build_report([tmp_path / "a"], tmp_path / "r.md")
    assert "Answer tokens right" in report
    assert f"| hope (tiny) | 60.0 ± {100 * statistics.stdev([0.5, 0.7]):.1f} | 0, 1 |" in report
    exact = write(tmp_path / "b", 0, 0.25)
    exact["evals"]["256"]["token_accuracy"] = 0.25
    (tmp_path / "b" / "result.json").write_text(json.dumps(exact))
    assert "Answer tokens right" not in build_report([tmp_path / "b"], tmp_path / "r2.md")


def test_stream_segments_get_their_mean_losses_and_the_paired_change_from_first_to_last(tmp_path):
    for seed, (first, last) in enumerate([(2.0, 1.5), (3.0, 2.0)]):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        segments = {"A1": {"mean": first}, "A2": {"mean": last}}
        scores = {"loss": (first + last) / 2, "rows": 2, "length": 8, "by_position": [[0, 8, (first + last) / 2]],
                  "segments": segments, "returns": {}}
        (folder / "result.json").write_text(json.dumps({
            "task": "stream_cipher", "family": "stream", "arch": "hope", "size": "tiny", "seed": seed,
            "evals": {"carried": scores}, "config": {"steps": 0, "batch_size": 2, "lr": 1e-3}}))
    report = build_report([tmp_path], tmp_path / "r.md")
    assert "Loss per segment, cipher (last - first: A2 minus A1, within each run):" in report
    change = f"{-0.75:.3f} ± {statistics.stdev([-0.5, -1.0]):.3f}"
    assert f"| hope (tiny) | carried | 2.500 ± 0.707 | 1.750 ± 0.354 | {change} |" in report


def test_loss_by_position_gets_the_carried_minus_reset_difference_paired_within_each_run(tmp_path):
    for seed, (carried, reset) in enumerate([((2.0, 1.0), (2.0, 1.5)), ((3.0, 1.0), (3.0, 2.0))]):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        evals = {label: {"loss": sum(v) / 2, "rows": 1, "length": 128,
                         "by_position": [[0, 64, v[0]], [64, 128, v[1]]]}
                 for label, v in (("carried", carried), ("reset", reset))}
        (folder / "result.json").write_text(json.dumps({
            "task": "stream_long_document", "family": "stream", "arch": "titans", "size": "tiny", "seed": seed,
            "evals": evals, "config": {"steps": 1, "batch_size": 2, "lr": 1e-3}}))
    report = build_report([tmp_path], tmp_path / "r.md")
    later = f"{-0.75:+.3f} ± {statistics.stdev([-0.5, -1.0]):.3f}"
    assert f"| titans (tiny) | carried - reset | +0.000 ± 0.000 | {later} |" in report
