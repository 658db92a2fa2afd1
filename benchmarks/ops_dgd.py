"""Linear DGD op: chunk (WY / UT) form vs the per-token reference, 1 thread, float32.

For B=1, H=4, Dk=Dv=64 and T in {512, 2048, 8192}: forward and forward+backward time of
``dgd(mode="chunk")`` and ``dgd(mode="naive")`` (best of several repetitions; the naive form is
repeated less at long T), the chunk form's achieved GFLOP/s as a fraction of this machine's measured
single-thread float32 matmul peak, and the training memory of both forms at T=8192. Prints the
ratios and writes ``docs/ops_dgd.json`` and ``docs/ops_dgd.md``.

    python benchmarks/ops_dgd.py [--lengths 512,2048,8192] [--rule dgd]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hope.ops.dgd import dgd

DOCS = Path(__file__).resolve().parent.parent / "docs"
B, H, D, CHUNK = 1, 4, 64, 64
TARGETS = {"fwd_bwd_speedup_at_2048": 10.0, "fwd_speedup_at_2048": 5.0, "memory_ratio_at_8192": 0.25}


def make_inputs(length: int, requires_grad: bool) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    tensors = [
        torch.randn(B, length, H, D, generator=gen),
        F.normalize(torch.randn(B, length, H, D, generator=gen), dim=-1),
        torch.randn(B, length, H, D, generator=gen),
        0.9 + 0.1 * torch.rand(B, length, H, generator=gen),
        torch.rand(B, length, H, generator=gen),
    ]
    return [t.requires_grad_(requires_grad) for t in tensors]


def forward_seconds(length: int, mode: str, rule: str, repeats: int) -> float:
    inputs = make_inputs(length, requires_grad=False)
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            dgd(*inputs, rule=rule, mode=mode, chunk_size=CHUNK, output_final_state=True)
            best = min(best, time.perf_counter() - start)
    return best


def training_step(inputs: list[torch.Tensor], mode: str, rule: str) -> None:
    o, state = dgd(*inputs, rule=rule, mode=mode, chunk_size=CHUNK, output_final_state=True)
    (o.square().mean() + state.square().mean()).backward()


def train_seconds(length: int, mode: str, rule: str, repeats: int) -> float:
    inputs = make_inputs(length, requires_grad=True)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        training_step(inputs, mode, rule)
        best = min(best, time.perf_counter() - start)
        for t in inputs:
            t.grad = None
    return best


def saved_tensor_bytes(length: int, mode: str, rule: str) -> int:
    """Bytes autograd keeps between forward and backward (unique storages, inputs included)."""
    inputs = make_inputs(length, requires_grad=True)
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        o, state = dgd(*inputs, rule=rule, mode=mode, chunk_size=CHUNK, output_final_state=True)
    del o, state
    return sum(storages.values())


def peak_rss_growth(length: int, mode: str, rule: str) -> int:
    """Peak resident memory added by one forward+backward, measured in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--child-rss", f"{length},{mode},{rule}"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return int(out.stdout.strip().splitlines()[-1])


def _proc_status_kib(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field + ":")))


def child_rss(spec: str) -> None:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs``), run one step, print the growth."""
    length, mode, rule = spec.split(",")
    torch.set_num_threads(1)
    inputs = make_inputs(int(length), requires_grad=True)
    training_step(make_inputs(64, requires_grad=True), mode, rule)
    Path("/proc/self/clear_refs").write_text("5")
    before = _proc_status_kib("VmRSS")
    training_step(inputs, mode, rule)
    print((_proc_status_kib("VmHWM") - before) * 1024)


def chunk_flops_per_token(rule: str, c: int = CHUNK, dk: int = D, dv: int = D) -> int:
    """Forward matmul FLOPs per token and head of the chunk form (2 per multiply-add; elementwise
    work not counted): scores ``Q K^T`` and ``(.) U`` (``2C(Dk + Dv)``), the read of the entering
    state and the state update (``4 Dk Dv``); for DGD also ``K K^T`` (``2C Dk``), the triangular
    solve (``C (Dk + Dv)``) and ``W S^T`` (``2 Dk Dv``)."""
    flops = 2 * c * (dk + dv) + 4 * dk * dv
    if rule == "dgd":
        flops += 2 * c * dk + c * (dk + dv) + 2 * dk * dv
    return flops


def matmul_peak_gflops(n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def write_docs(result: dict) -> None:
    DOCS.mkdir(exist_ok=True)
    (DOCS / "ops_dgd.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        "| T | chunk fwd (ms) | naive fwd (ms) | fwd speed-up | chunk fwd+bwd (ms) | naive fwd+bwd (ms) "
        "| fwd+bwd speed-up | chunk fwd GFLOP/s | fraction of matmul peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["lengths"]:
        rows.append(
            f"| {r['T']} | {r['chunk_fwd_s'] * 1e3:.1f} | {r['naive_fwd_s'] * 1e3:.1f} | {r['fwd_speedup']:.1f}x "
            f"| {r['chunk_fwd_bwd_s'] * 1e3:.1f} | {r['naive_fwd_bwd_s'] * 1e3:.1f} | {r['fwd_bwd_speedup']:.1f}x "
            f"| {r['chunk_fwd_gflops']:.2f} | {r['chunk_fwd_fraction_of_peak']:.1%} |"
        )
    mem = result["memory"]
    text = f"""# Linear DGD op: chunk vs per-token reference

Produced by `python benchmarks/ops_dgd.py` (rule `{result['rule']}`, float32, 1 thread, B={B}, H={H},
Dk=Dv={D}, chunk size {CHUNK}). Times: {result['repeats']}.
The machine is shared with other jobs: load average {result['load_average_start']} at the start and
{result['load_average_end']} at the end of the run, so absolute times are noisy; each ratio compares
two measurements of the same run.

Measured single-thread float32 matmul peak ({result['matmul_n']}x{result['matmul_n']}):
{result['matmul_peak_gflops']:.1f} GFLOP/s. The chunk form's FLOPs are counted analytically
({result['chunk_flops_per_token']} matmul FLOPs per token and head, forward; elementwise work not
counted), so the fraction of peak is a lower bound on how busy the matmul units are.

{chr(10).join(rows)}

Training memory at T={mem['T']} (one forward + backward):

| measure | chunk | naive | chunk / naive |
|---|---|---|---|
| bytes saved for backward (unique storages, via `saved_tensors_hooks`) | {mem['chunk_saved_mb']:.1f} MB | {mem['naive_saved_mb']:.1f} MB | {mem['saved_ratio']:.3f} |
| peak RSS growth of a fresh process (`VmHWM` after `clear_refs`) | {mem['chunk_peak_rss_mb']:.1f} MB | {mem['naive_peak_rss_mb']:.1f} MB | {mem['peak_rss_ratio']:.3f} |

Targets (issue 3): fwd+bwd speed-up >= {TARGETS['fwd_bwd_speedup_at_2048']:.0f}x and forward
speed-up >= {TARGETS['fwd_speedup_at_2048']:.0f}x at T=2048; training memory <= {TARGETS['memory_ratio_at_8192']}x naive
at T=8192. Met in this run: {', '.join(f'{k} {"yes" if v else "no"}' for k, v in result['targets_met'].items())}.

What is compared. `naive` is the per-token reference (`src/hope/ops/dgd/naive.py`): a Python loop
doing the rank-one update `alpha S - eta (S k) k^T + eta v k^T` and the read `S q`, i.e. O(Dk Dv)
work per token (it never forms the Dk x Dk transition matrix), differentiated by plain autograd,
which keeps one Dv x Dk state per token. `chunk` (`src/hope/ops/dgd/chunk.py`): per chunk of C tokens
one unit lower-triangular solve gives the WY / UT factors of the chunk's C steps, for all chunks at
once; a loop over the T/C chunks carries the state; outputs are dense matmuls. When gradients are
needed it runs in checkpointed segments of about 1024 tokens, so autograd keeps only the inputs and
one state per segment, and the backward recomputes one segment at a time (that recomputation is
included in the forward+backward times).

How memory is measured. "Saved for backward" sums the sizes of the distinct storages that autograd
holds between forward and backward (`torch.autograd.graph.saved_tensors_hooks`; the inputs count,
for both forms): the activation memory a layer adds to a model's training step. "Peak RSS growth"
runs one forward+backward in a fresh process, resets the kernel's peak-RSS mark (Linux
`/proc/self/clear_refs`) just before, and reads `VmHWM` after: it includes the backward's
temporaries and the gradients. The issue's memory target is checked against the larger ratio.

The Hebbian rule is already one of the op's rules. `rule="gd"` with `alpha = eta = 1` is plain Hebbian learning,
`S_t = S_{{t-1}} + v_t k_t^T` (NL Eq. 64 without retention; no erase term), i.e. causal linear attention. BDH
(`hope.models.bdh`, Kosowski et al. 2025, arXiv 2509.26507 Sec. 3) runs its synaptic state through it: keys are
the RoPE'd sparse neuron activations, values the residual stream, and each token reads the synapses written by
the tokens before it (keys and values enter the op one token late). It has no rule of its own to benchmark here.
"""
    (DOCS / "ops_dgd.md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="512,2048,8192")
    parser.add_argument("--rule", default="dgd", choices=["dgd", "gd"])
    parser.add_argument("--child-rss", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rss:
        child_rss(args.child_rss)
        return
    torch.set_num_threads(1)
    load_start = [round(x, 2) for x in os.getloadavg()]
    lengths = [int(x) for x in args.lengths.split(",")]
    repeats = {"chunk": 5, "naive": {512: 3, 2048: 2}, "naive_long": 1}
    peak = matmul_peak_gflops()
    flops_per_token = chunk_flops_per_token(args.rule)
    rows = []
    for length in lengths:
        naive_repeats = repeats["naive"].get(length, repeats["naive_long"])
        row = {
            "T": length,
            "chunk_fwd_s": forward_seconds(length, "chunk", args.rule, repeats["chunk"]),
            "naive_fwd_s": forward_seconds(length, "naive", args.rule, naive_repeats),
            "chunk_fwd_bwd_s": train_seconds(length, "chunk", args.rule, repeats["chunk"]),
            "naive_fwd_bwd_s": train_seconds(length, "naive", args.rule, naive_repeats),
        }
        row["fwd_speedup"] = row["naive_fwd_s"] / row["chunk_fwd_s"]
        row["fwd_bwd_speedup"] = row["naive_fwd_bwd_s"] / row["chunk_fwd_bwd_s"]
        row["chunk_fwd_gflops"] = flops_per_token * B * H * length / row["chunk_fwd_s"] / 1e9
        row["chunk_fwd_fraction_of_peak"] = row["chunk_fwd_gflops"] / peak
        rows.append(row)
        print(
            f"T={length:5d}  fwd: chunk {row['chunk_fwd_s'] * 1e3:8.1f} ms  naive {row['naive_fwd_s'] * 1e3:8.1f} ms"
            f"  {row['fwd_speedup']:5.1f}x | fwd+bwd: chunk {row['chunk_fwd_bwd_s'] * 1e3:8.1f} ms"
            f"  naive {row['naive_fwd_bwd_s'] * 1e3:9.1f} ms  {row['fwd_bwd_speedup']:5.1f}x"
            f" | chunk {row['chunk_fwd_gflops']:.2f} GFLOP/s = {row['chunk_fwd_fraction_of_peak']:.1%} of peak",
            flush=True,
        )
    mem_t = max(lengths)
    mem = {"T": mem_t}
    for mode in ("chunk", "naive"):
        mem[f"{mode}_saved_mb"] = saved_tensor_bytes(mem_t, mode, args.rule) / 1e6
        mem[f"{mode}_peak_rss_mb"] = peak_rss_growth(mem_t, mode, args.rule) / 1e6
    mem["saved_ratio"] = mem["chunk_saved_mb"] / mem["naive_saved_mb"]
    mem["peak_rss_ratio"] = mem["chunk_peak_rss_mb"] / mem["naive_peak_rss_mb"]
    print(
        f"T={mem_t} training memory: saved for backward chunk {mem['chunk_saved_mb']:.1f} MB / naive "
        f"{mem['naive_saved_mb']:.1f} MB = {mem['saved_ratio']:.3f}; peak RSS growth chunk "
        f"{mem['chunk_peak_rss_mb']:.1f} MB / naive {mem['naive_peak_rss_mb']:.1f} MB = {mem['peak_rss_ratio']:.3f}"
    )
    print(f"matmul peak {peak:.1f} GFLOP/s (1 thread, float32)")
    by_length = {r["T"]: r for r in rows}
    met = {}
    if 2048 in by_length:
        met["fwd_bwd_speedup_at_2048"] = by_length[2048]["fwd_bwd_speedup"] >= TARGETS["fwd_bwd_speedup_at_2048"]
        met["fwd_speedup_at_2048"] = by_length[2048]["fwd_speedup"] >= TARGETS["fwd_speedup_at_2048"]
    if mem_t == 8192:
        met["memory_ratio_at_8192"] = max(mem["saved_ratio"], mem["peak_rss_ratio"]) <= TARGETS["memory_ratio_at_8192"]
    result = {
        "rule": args.rule,
        "dtype": "float32",
        "threads": 1,
        "shape": {"B": B, "H": H, "Dk": D, "Dv": D, "chunk_size": CHUNK},
        "repeats": "chunk 5, naive 3 at T=512, 2 at T=2048, 1 beyond; best of the repetitions",
        "matmul_n": 1024,
        "matmul_peak_gflops": peak,
        "chunk_flops_per_token": flops_per_token,
        "lengths": rows,
        "memory": mem,
        "targets": TARGETS,
        "targets_met": met,
        "load_average_start": load_start,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    write_docs(result)


if __name__ == "__main__":
    main()
