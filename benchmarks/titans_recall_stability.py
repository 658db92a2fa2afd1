"""Train an arch on recall data (MQAR, 32-128 tokens, 146-token vocabulary) and print the step of the first
non-finite loss or gradient norm, if any.

The recipe of tests/models/test_recall_stability.py as a script: the tiny preset narrowed to ``d_model=64``,
2 layers, 2 heads; AdamW with a one-cycle schedule over ``--schedule`` steps, gradient clipping 1.0, batch 16.
Every ``--every`` steps it prints the loss, the gradient norm, the largest state value and, for Titans, the
largest gates ``theta, beta, forget`` per layer. Before the fix of ``hope.ops.mlp_memory.titans.clip_factor``
Titans' gradients were NaN at step 70 of the default run (docs/results.md, "Titans on recall data: where the
memory overflowed").

    python benchmarks/titans_recall_stability.py --arch titans --lr 3e-2 --steps 200
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from hope.models import build
from hope.tasks.mqar import MQARTask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="titans")
    parser.add_argument("--lr", type=float, default=3e-2)
    parser.add_argument("--steps", type=int, default=200, help="steps to run")
    parser.add_argument("--schedule", type=int, default=200, help="length of the one-cycle schedule")
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = build(args.arch, "tiny", vocab_size=146, d_model=64, n_layers=2, n_heads=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.schedule)
    gates: dict[int, torch.Tensor] = {}
    for i, block in enumerate(model.blocks):
        if args.arch == "titans":
            block.mixer.gates.register_forward_hook(
                lambda module, inputs, out, i=i: gates.__setitem__(i, torch.sigmoid(out.detach())))
    start = time.time()
    for step in range(args.steps):
        length = int(rng.choice([32, 64, 128]))
        batch = MQARTask(length=length, num_kv_pairs=length // 8, vocab_size=146).batch(rng, 16)
        out = model(torch.from_numpy(batch.input_ids), targets=torch.from_numpy(batch.targets))
        largest = max((t.detach().abs().max().item() for t in out.state.tensors().values()
                       if t.is_floating_point() and t.numel()), default=0.0)
        optimizer.zero_grad()
        out.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        finite = math.isfinite(out.loss.item()) and math.isfinite(norm)
        if step % args.every == 0 or not finite:
            extremes = {i: [round(g.max().item(), 3) for g in s.chunk(3, dim=-1)] for i, s in gates.items()}
            print(f"step {step} length {length} loss {out.loss.item():.4f} grad norm {norm:.3g} "
                  f"state max {largest:.3g} max(theta, beta, forget) {extremes} {time.time() - start:.0f}s", flush=True)
        if not finite:
            print(f"first non-finite loss or gradient at step {step}")
            return
        optimizer.step()
        schedule.step()
    print(f"finite through {args.steps} steps")


if __name__ == "__main__":
    main()
