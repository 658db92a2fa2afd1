"""``hope eval`` and ``hope generate``: loss, perplexity and bits per byte of a checkpoint; sampling from it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hope.cli.flags import HelpFormatter
from hope.errors import HopeError


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser("eval", help="Loss, perplexity and bits per byte of a checkpoint.",
                               formatter_class=HelpFormatter)
    ev.add_argument("--checkpoint", required=True, type=Path, metavar="DIR", help="Checkpoint directory.")
    ev.add_argument("--data", help="Text file or folder of .txt files (default: the embedded corpus).")
    ev.add_argument("--split", default="test", choices=["train", "validation", "test"], help="Split to evaluate.")
    ev.add_argument("--seq-len", type=int, help="Window length (default: the training seq_len).")
    ev.add_argument("--max-windows", type=int, help="Evaluate at most this many windows (default: the whole split).")
    ev.add_argument("--out", type=Path, help="JSON file to write (default: DIR/../eval_SPLIT.json).")
    ev.add_argument("--device", default="auto", help="cpu, cuda or auto.")
    ev.set_defaults(func=run_eval)

    gen = subparsers.add_parser("generate", help="Sample text from a checkpoint.", formatter_class=HelpFormatter)
    gen.add_argument("--checkpoint", required=True, type=Path, metavar="DIR", help="Checkpoint directory.")
    gen.add_argument("--prompt", default="", help="Text to start from.")
    gen.add_argument("--prompt-file", type=Path, help="Read the prompt from this text file instead.")
    gen.add_argument("--max-new-tokens", type=int, default=100, help="Tokens to generate.")
    gen.add_argument("--temperature", type=float, default=0.8, help="Sampling temperature (0: greedy).")
    gen.add_argument("--top-k", type=int, default=None, help="Sample among the k most likely tokens.")
    gen.add_argument("--top-p", type=float, default=None, help="Nucleus sampling: smallest set with this mass.")
    gen.add_argument("--seed", type=int, default=0, help="Sampling seed.")
    gen.add_argument("--state", type=Path, metavar="FILE",
                     help="Continue from the in-context state in FILE if it exists, and save the state there after.")
    gen.add_argument("--device", default="auto", help="cpu, cuda or auto.")
    gen.set_defaults(func=run_generate)


def _training_seq_len(checkpoint: Path) -> int:
    config_path = checkpoint.parent / "train_config.json"
    if config_path.is_file():
        return int(json.loads(config_path.read_text()).get("seq_len", 256))
    return 256


def run_eval(args: argparse.Namespace) -> dict[str, float]:
    from hope.checkpoint import load_checkpoint  # after parsing: see hope.cli
    from hope.data import encode_corpus, load_corpus
    from hope.eval.perplexity import evaluate_lm
    from hope.runtime import resolve_device

    device = resolve_device(args.device)
    model, tokenizer, _ = load_checkpoint(args.checkpoint, device=device)
    dataset = encode_corpus(load_corpus(args.data), tokenizer)
    seq_len = args.seq_len or _training_seq_len(Path(args.checkpoint))
    result = evaluate_lm(model, dataset[args.split], seq_len=seq_len, max_windows=args.max_windows, device=device)
    report = {"checkpoint": str(args.checkpoint), "data": dataset.source, "split": args.split, "seq_len": seq_len,
              **result.to_dict()}
    out = args.out or Path(args.checkpoint).parent / f"eval_{args.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"{'split':<12}{'tokens':>10}{'loss':>10}{'ppl':>12}{'bpb':>10}")
    print(f"{args.split:<12}{result.tokens:>10}{result.loss:>10.4f}{result.perplexity:>12.2f}{result.bits_per_byte:>10.4f}")
    print(f"written to {out}")
    return report


def _model_fingerprint(checkpoint: Path) -> str:
    """Identifies the weights a state was learned with (the checksum of model.safetensors)."""
    return json.loads((checkpoint / "manifest.json").read_text())["model.safetensors"]


def run_generate(args: argparse.Namespace) -> str:
    import torch  # after parsing: see hope.cli

    from hope.checkpoint import load_checkpoint
    from hope.generate import stream
    from hope.models import HopeState
    from hope.runtime import resolve_device

    device = resolve_device(args.device)
    model, tokenizer, _ = load_checkpoint(args.checkpoint, device=device)
    fingerprint = _model_fingerprint(Path(args.checkpoint))
    if args.max_new_tokens < 0:
        raise HopeError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    prompt = args.prompt
    if args.prompt_file is not None:
        if not args.prompt_file.is_file():
            raise HopeError(f"prompt file {args.prompt_file} does not exist")
        prompt = args.prompt_file.read_text(encoding="utf-8")
    state = None
    if args.state is not None and args.state.exists():
        state, meta = HopeState.load(args.state, device=device)
        if meta.get("model") != fingerprint:
            raise HopeError(f"state file {args.state} was written by another model than {args.checkpoint}")
        if len(state.layers) != len(model.blocks):
            raise HopeError(f"state file {args.state} has {len(state.layers)} layers, the model {len(model.blocks)}")
    ids = tokenizer.encode(prompt) if prompt else []
    if not ids:
        ids = [tokenizer.eot_id] if state is None else []
    if not ids:
        raise HopeError("nothing to read: give --prompt (a saved state needs at least one new token to continue)")
    generator = torch.Generator(device=device).manual_seed(args.seed)
    prompt_ids = torch.tensor([ids], device=device)
    sys.stdout.write(prompt)
    new_ids: list[int] = []
    last_state = state
    for next_ids, last_state in stream(model, prompt_ids, args.max_new_tokens, state=state,
                                       temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                       generator=generator):
        new_ids.append(int(next_ids[0]))
        text = tokenizer.decode(new_ids)
        previous = tokenizer.decode(new_ids[:-1])
        sys.stdout.write(text[len(previous):])
        sys.stdout.flush()
    sys.stdout.write("\n")
    if args.state is not None:
        with torch.no_grad():
            if new_ids:
                last_state = model(torch.tensor([new_ids[-1:]], device=device), state=last_state).state
            elif last_state is None or last_state.position == (state.position if state else 0):
                last_state = model(prompt_ids, state=state).state
        last_state.save(args.state, metadata={"model": fingerprint})
        print(f"state after {last_state.position} tokens saved to {args.state}", file=sys.stderr)
    return tokenizer.decode(new_ids)
