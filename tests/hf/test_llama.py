"""``hope convert``: a tiny random Llama (made here, no download) as Hope-Attention (NL Sec. 7.3)."""

import pytest
import torch

from hope.cli import main

transformers = pytest.importorskip("transformers", reason="needs the hf extra: pip install -e '.[hf]'")
import hope.hf  # noqa: E402,F401  (registers model_type "hope")
from hope.hf.llama import llama_to_hope  # noqa: E402


def tiny_llama(**overrides):
    config = transformers.LlamaConfig(**{
        "vocab_size": 97, "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_parameters": {"rope_theta": 500.0, "rope_type": "default"},
        **overrides})
    return transformers.LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("periods", [(None,), (16, 32, None)])
def test_converted_llama_has_the_llamas_logits_with_test_time_learning_off(tied, periods):
    llama = tiny_llama(tie_word_embeddings=tied)
    ids = torch.randint(0, 97, (2, 48))
    model = llama_to_hope(llama, periods, test_time_learning=False)
    assert model.config.arch == "hope-attention" and len(model.blocks[0].channel.levels) == len(periods)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, llama(ids).logits, atol=1e-5, rtol=0)


def test_with_test_time_learning_it_starts_as_the_llama_and_learns_in_context():
    llama = tiny_llama()
    torch.manual_seed(1)
    pattern = torch.randint(0, 97, (1, 16))
    ids = pattern.repeat(1, 4)  # the same 16 tokens four times: what it read is what comes next
    learning = llama_to_hope(llama, (16,), test_time_learning=True, cms_lr=10.0)
    frozen = llama_to_hope(llama, (16,), test_time_learning=False)
    with torch.no_grad():
        reference = llama(ids).logits
        logits = learning(ids).logits
        torch.testing.assert_close(logits[:, :16], reference[:, :16], atol=1e-5, rtol=0)  # before the first step

    def loss(x):
        return torch.nn.functional.cross_entropy(x[0, 16:-1], ids[0, 17:]).item()

    with torch.no_grad():
        assert loss(logits) < loss(frozen(ids).logits) - 0.2  # measured: 0.31 nats lower


def test_hope_convert_writes_a_folder_automodel_reads(tmp_path):
    llama = tiny_llama()
    llama.save_pretrained(tmp_path / "llama")
    assert main(["convert", "--from-hf", str(tmp_path / "llama"), "--out", str(tmp_path / "hope"),
                 "--cms-periods", "16", "none", "--no-test-time-learning"]) == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hope").eval()
    ids = torch.randint(0, 97, (1, 40))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, llama(ids).logits, atol=1e-5, rtol=0)
    assert torch.equal(model.generate(ids, max_new_tokens=8, do_sample=False),
                       llama.generate(ids, max_new_tokens=8, do_sample=False))


@pytest.mark.parametrize("overrides, message", [
    ({"rope_parameters": {"rope_theta": 500.0, "rope_type": "linear", "factor": 2.0}}, "RoPE scaling"),
    ({"attention_bias": True}, "biases"),
    ({"hidden_act": "gelu"}, "silu"),
    ({"head_dim": 16}, "head_dim"),
])
def test_unsupported_llamas_are_refused_in_one_line(tmp_path, capsys, overrides, message):
    tiny_llama(**overrides).save_pretrained(tmp_path / "llama")
    capsys.readouterr()
    assert main(["convert", "--from-hf", str(tmp_path / "llama"), "--out", str(tmp_path / "hope")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "hope").exists()
