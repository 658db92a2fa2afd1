"""hope.hf and ``hope export``: the Hugging Face model gives hope's logits and greedy tokens for every arch."""

import subprocess
import sys

import pytest
import torch

from hope.checkpoint import load_checkpoint, save_checkpoint
from hope.cli import main
from hope.data.tokenizer import BPETokenizer, BytesTokenizer
from hope.generate import generate
from hope.models import ARCHS, build

transformers = pytest.importorskip("transformers", reason="needs the hf extra: pip install -e '.[hf]'")
from hope.hf import HopeForCausalLM, to_hf_tokenizer  # noqa: E402  (registers model_type "hope")

SMALL = {"d_model": 32, "n_layers": 2, "n_heads": 2}


def small(arch, vocab_size=257, **overrides):
    """Small models whose CMS (if any) steps inside the test sequences (periods 8 and 16)."""
    extra = {"cms_periods": (8, 16)} if arch in ("hope", "hope-attention") else {}
    return build(arch, None, vocab_size=vocab_size, **SMALL, **extra, **overrides).eval()


@pytest.fixture
def exported(tmp_path):
    def make(arch, tokenizer=None):
        tokenizer = tokenizer or BytesTokenizer()
        save_checkpoint(tmp_path / arch / "ckpt", small(arch, vocab_size=max(257, tokenizer.vocab_size)), tokenizer)
        assert main(["export", "--checkpoint", str(tmp_path / arch / "ckpt"), "--out", str(tmp_path / arch / "hf")]) == 0
        return tmp_path / arch / "ckpt", tmp_path / arch / "hf"
    return make


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_exported_model_matches_checkpoint_logits_and_greedy_tokens(arch, exported, tmp_path):
    ckpt, hf_dir = exported(arch)
    model, tokenizer, _ = load_checkpoint(ckpt)
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    assert isinstance(hf, HopeForCausalLM) and hf.dtype == torch.float32
    ids = torch.tensor([tokenizer.encode("The state of the Union is strong, and")])
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, model(ids).logits)
    expected = generate(model.eval(), ids, 12, temperature=0)
    assert torch.equal(hf.generate(ids, max_new_tokens=12, do_sample=False), expected)
    hf.save_pretrained(tmp_path / "again")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "again").eval()
    assert torch.equal(again.generate(ids, max_new_tokens=12, do_sample=False), expected)


def test_generate_reads_the_prompt_once_then_one_token_per_step(exported):
    _, hf_dir = exported("hope")
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    lengths = []
    hf.model.register_forward_pre_hook(lambda module, args, kwargs: lengths.append(args[0].shape[1]), with_kwargs=True)
    hf.generate(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]), max_new_tokens=6, do_sample=False)
    assert lengths == [11, 1, 1, 1, 1, 1]


def test_cli_generate_at_temperature_0_equals_hf_generate(exported, capsys):
    ckpt, hf_dir = exported("titans")
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(ckpt), "--prompt", "Hello", "--temperature", "0",
                 "--max-new-tokens", "10", "--threads", "1"]) == 0
    printed = capsys.readouterr().out.rstrip("\n")
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    out = hf.generate(**tok("Hello", return_tensors="pt"), max_new_tokens=10, do_sample=False)
    assert tok.decode(out[0]) == printed


def test_bpe_tokenizer_round_trips_through_the_export(exported):
    texts = ["the state of the union is strong and the people are free"] * 30
    tokenizer = BPETokenizer.train(texts, 300)
    _, hf_dir = exported("transformer", tokenizer)
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    text = "the union is free, é!"
    assert tok(text)["input_ids"] == tokenizer.encode(text)
    assert tok.decode(tokenizer.encode(text)) == text and tok.eos_token_id == tokenizer.eot_id


def test_byte_tokenizer_equals_hopes():
    hope_tok, tok = BytesTokenizer(), to_hf_tokenizer(BytesTokenizer())
    text = "Ünïcode, tabs\tand\nnew lines  plus <b> 東京 🙂"
    assert tok(text)["input_ids"] == hope_tok.encode(text)
    assert tok.decode(hope_tok.encode(text)) == text
    assert tok.eos_token_id == tok.bos_token_id == hope_tok.eot_id == 256 and len(tok) == 257


def test_right_padding_scores_like_no_padding_and_left_padding_is_refused():
    hf = HopeForCausalLM.from_hope(small("hope"))
    ids = torch.randint(0, 257, (2, 20))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    with torch.no_grad():
        padded = hf(ids, attention_mask=mask).logits
        # equal up to float32 rounding: the chunked mixer's reductions run over other shapes at another length
        torch.testing.assert_close(padded[1, :15], hf(ids[1:, :15]).logits[0], rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="left padding"):
            hf(ids, attention_mask=mask.flip(1))
    with pytest.raises(ValueError, match="beam search"):
        hf.generate(ids[:1], max_new_tokens=2, num_beams=2)


def test_export_refuses_a_used_folder_and_help_does_not_import_torch(exported, tmp_path):
    ckpt, hf_dir = exported("transformer")
    result = subprocess.run([sys.executable, "-m", "hope", "export", "--checkpoint", ckpt, "--out", hf_dir],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "not an empty folder" in result.stderr
    for argv in (["export", "--help"], ["convert", "--help"], ["eval", "--help"], ["convert", "--cms-periods", "0"]):
        code = ("import sys\nfrom hope.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
                "assert 'torch' not in sys.modules and 'transformers' not in sys.modules" % argv)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode == 0, (argv, result.stderr)
