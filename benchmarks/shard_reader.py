"""Training batches drawn from token shards against the in-memory reader: tokens/s and peak memory (RSS).

Writes two corpora of generated token ids through ``hope.data.shards.ShardWriter`` (as ``hope data prepare``
writes them: uint16, documents of 200-2,000 tokens each ending with end-of-text), one small (``--small-tokens``)
and one of ``--tokens`` (500M uint16 tokens = 1 GB by default), in a temporary folder under ``--tmp`` that is
deleted at the end. Then, each in a fresh process on one thread, three readers draw ``--steps`` training batches
(``hope.data.batch_at``, batch ``--batch`` x ``--seq-len``, the trainer's defaults) from each corpus:

- ``in-memory``: the corpus read into one ``np.ndarray`` (what ``hope train`` holds for text data);
- ``memmap``: ``np.memmap`` of the shard file (pages touched stay in the process's RSS);
- ``shards``: ``hope.data.shards.ShardedTokens`` (what ``hope train --data DIR`` reads: ``pread`` of each window).

Each process reports its RSS before reading (after imports), after loading, and its peak (``VmHWM``); the
files are in the page cache (just written), so tokens/s is a warm-cache figure. Writes ``docs/shard_reader.json``
and ``.md``.

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/shard_reader.py [--tokens 500000000] [--steps 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hope.data.shards import ShardWriter, token_dtype

DOCS = Path(__file__).resolve().parent.parent / "docs"
READERS = ("in-memory", "memmap", "shards")
VOCAB, EOT = 4096, 0


def write_corpus(folder: Path, n_tokens: int, seed: int) -> dict:
    """``n_tokens`` generated ids in one shard file (plus document offsets), through the shard writer."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    writer = ShardWriter(folder, "train", token_dtype(VOCAB), shard_tokens=n_tokens)
    started, written = time.perf_counter(), 0
    while written < n_tokens:
        chunk = rng.integers(1, VOCAB, size=min(1 << 24, n_tokens - written), dtype=np.int64)
        cuts = np.cumsum(rng.integers(200, 2001, size=len(chunk) // 200 + 1))
        cuts = cuts[cuts < len(chunk)]
        chunk[cuts - 1] = EOT
        chunk[-1] = EOT
        for document in np.split(chunk, cuts):
            writer.add(document, n_bytes=len(document))
        written += len(chunk)
    entry = writer.finish()
    return {"tokens": entry["tokens"], "documents": entry["documents"], "files": [folder / f["file"] for f in
            entry["files"]], "write_seconds": time.perf_counter() - started}


def _status_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident since exec: ``ru_maxrss`` would carry the forking
    parent's) from ``/proc/self/status``, in MB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def worker(reader: str, files: list[str], counts: list[int], steps: int, batch: int, seq_len: int) -> None:
    """Load the corpus with ``reader``, draw ``steps`` batches, print one JSON line."""
    from hope.data.dataset import batch_at
    from hope.data.shards import ShardedTokens

    dtype = token_dtype(VOCAB)
    before = _status_mb("VmRSS")
    started = time.perf_counter()
    if reader == "in-memory":
        parts = [np.fromfile(f, dtype=dtype) for f in files]
        tokens = parts[0] if len(parts) == 1 else np.concatenate(parts)
    elif reader == "memmap":
        assert len(files) == 1, "the memmap reader maps one shard file"
        tokens = np.memmap(files[0], dtype=dtype, mode="r")
    else:
        tokens = ShardedTokens([Path(f) for f in files], counts, dtype)
    load_seconds = time.perf_counter() - started
    loaded = _status_mb("VmRSS")
    batch_at(tokens, 0, batch_size=batch, seq_len=seq_len, seed=0)
    started = time.perf_counter()
    checksum = 0
    for step in range(steps):
        inputs, _ = batch_at(tokens, step, batch_size=batch, seq_len=seq_len, seed=0)
        checksum += int(inputs[0, 0])
    seconds = time.perf_counter() - started
    print(json.dumps({"reader": reader, "tokens": len(tokens), "load_seconds": load_seconds,
                      "tok_s": steps * batch * seq_len / seconds, "rss_before_mb": before, "rss_loaded_mb": loaded,
                      "rss_end_mb": _status_mb("VmRSS"), "peak_rss_mb": _status_mb("VmHWM"),
                      "checksum": checksum}))


def measure(reader: str, corpus: dict, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", reader, "--files", *map(str, corpus["files"]),
               "--counts", str(corpus["tokens"]), "--steps", str(args.steps), "--batch", str(args.batch),
               "--seq-len", str(args.seq_len)]
    out = subprocess.run(command, capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| corpus tokens | reader | load s | batches tok/s | RSS before MB | RSS after load MB | peak RSS MB | "
             "peak - before MB |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['tokens']:,} | {r['reader']} | {r['load_seconds']:.2f} | {r['tok_s']:,.0f} | "
                     f"{r['rss_before_mb']:.0f} | {r['rss_loaded_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['peak_rss_mb'] - r['rss_before_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=500_000_000, help="Tokens of the large corpus (uint16).")
    parser.add_argument("--small-tokens", type=int, default=50_000_000, help="Tokens of the small corpus.")
    parser.add_argument("--steps", type=int, default=3000, help="Batches drawn per reader.")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="Where the corpora are written (and deleted).")
    parser.add_argument("--out", default=str(DOCS / "shard_reader"), help="Writes OUT.json and OUT.md.")
    parser.add_argument("--worker", choices=READERS, help=argparse.SUPPRESS)
    parser.add_argument("--files", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--counts", nargs="+", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.files, args.counts, args.steps, args.batch, args.seq_len)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still delete the corpora
    folder = Path(tempfile.mkdtemp(prefix="hope-shard-bench-", dir=args.tmp))
    rows, corpora = [], []
    try:
        for name, n_tokens in (("small", args.small_tokens), ("large", args.tokens)):
            corpus = write_corpus(folder / name, n_tokens, seed=len(corpora))
            corpora.append({"name": name, "tokens": corpus["tokens"], "documents": corpus["documents"],
                            "bytes": sum(f.stat().st_size for f in corpus["files"]),
                            "write_seconds": corpus["write_seconds"]})
            print(f"wrote {name}: {corpus['tokens']:,} tokens, {corpora[-1]['bytes'] / 1e9:.2f} GB in "
                  f"{corpus['write_seconds']:.0f} s", flush=True)
            for reader in READERS:
                rows.append(measure(reader, corpus, args))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        shutil.rmtree(folder)
    checksums = {r["tokens"]: {x["checksum"] for x in rows if x["tokens"] == r["tokens"]} for r in rows}
    assert all(len(c) == 1 for c in checksums.values()), "readers drew different batches"
    report = {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
              "steps": args.steps, "batch": args.batch, "seq_len": args.seq_len, "corpora": corpora, "rows": rows}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    command = "nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/shard_reader.py" + \
        "".join(f" --{k.replace('_', '-')} {getattr(args, k)}" for k in ("tokens", "small_tokens", "steps"))
    out.with_suffix(".md").write_text(
        f"# Token shards against the in-memory reader\n\n`{command}` on {os.cpu_count()} CPUs "
        f"({platform.platform()}), load average {os.getloadavg()[0]:.2f} at the end. Each reader draws "
        f"{args.steps} training batches of {args.batch} x {args.seq_len} tokens (`hope.data.batch_at`, the same "
        f"batches for every reader: checked) in its own process, on one thread; the shard files were just written "
        f"(page cache warm). RSS in MB from `/proc/self/status`: VmRSS before loading (after imports) and after, "
        f"and the peak VmHWM.\n\n"
        + table(rows) + "\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
