"""The toy landscape of NL Eq. 53 / Fig. 4: momentum vs delta momentum (NL Eq. 49).

    psi(r, theta) = r^2 + k (r - theta + a sin(omega r))^2,   start (-3.5, 2),  minimum psi(0, 0) = 0

The paper does not print ``k, a, omega``; the defaults here (5, 1, 3) give a narrow, wiggly valley.
Both optimizers are ``hope.optim.DeltaMomentum`` on the parameter ``[r, theta]`` (``delta=0`` is
plain momentum, ``W <- W + m``, ``m <- alpha m - lr g``). Each gets the best setting of a grid
(lr x momentum, and x delta for delta momentum), scored by the steps after which ``psi`` stays
below 1e-6; the
plot shows both trajectories and loss curves. Usage::

    python benchmarks/toy_landscape.py            # writes docs/toy_landscape.png and .json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import torch

from hope.optim import DeltaMomentum

LRS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05)
MOMENTA = (0.8, 0.9, 0.95)
DELTAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def psi(w: torch.Tensor, k: float, a: float, omega: float) -> torch.Tensor:
    """NL Eq. 53 at ``w = [r, theta]``."""
    r, theta = w[..., 0], w[..., 1]
    return r**2 + k * (r - theta + a * torch.sin(omega * r)) ** 2


def trajectory(lr: float, momentum: float, delta: float, landscape: tuple[float, float, float],
               steps: int) -> tuple[list[list[float]], list[float]] | None:
    """Points and losses of ``steps`` steps from (-3.5, 2); ``None`` if it diverges."""
    w = torch.nn.Parameter(torch.tensor([-3.5, 2.0], dtype=torch.float64))
    opt = DeltaMomentum([w], lr=lr, momentum=momentum, delta=delta)
    points, losses = [], []
    for _ in range(steps):
        opt.zero_grad()
        loss = psi(w, *landscape)
        loss.backward()
        points.append(w.detach().tolist())
        losses.append(loss.item())
        if not math.isfinite(losses[-1]) or losses[-1] > 1e6:
            return None
        opt.step()
    return points, losses


def steps_to(losses: list[float], threshold: float) -> int:
    """First step from which the loss stays below ``threshold`` (``len(losses)`` if it never settles)."""
    settled = len(losses)
    for i in range(len(losses) - 1, -1, -1):
        if losses[i] >= threshold:
            break
        settled = i
    return settled


def best(deltas: tuple[float, ...], landscape, steps: int, threshold: float) -> dict:
    results = []
    for lr, momentum, delta in itertools.product(LRS, MOMENTA, deltas):
        run = trajectory(lr, momentum, delta, landscape, steps)
        if run is not None:
            results.append({"lr": lr, "momentum": momentum, "delta": delta,
                            "steps_to_threshold": steps_to(run[1], threshold), "final_loss": run[1][-1],
                            "points": run[0], "losses": run[1]})
    return min(results, key=lambda r: (r["steps_to_threshold"], r["final_loss"]))


def plot(runs: dict[str, dict], landscape, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.5))
    every = torch.cat([torch.tensor(run["points"]) for run in runs.values()])
    low, high = every.min(0).values - 0.5, every.max(0).values + 0.5
    r, theta = torch.meshgrid(torch.linspace(low[0], high[0], 300), torch.linspace(low[1], high[1], 300), indexing="xy")
    z = psi(torch.stack([r, theta], dim=-1).double(), *landscape)
    ax.contour(r, theta, torch.log10(z + 1e-3), levels=25, cmap="Greys", linewidths=0.6)
    colors = {"momentum": "tab:blue", "delta momentum": "tab:red"}
    for name, run in runs.items():
        points = torch.tensor(run["points"])
        label = f"{name} (lr {run['lr']}, alpha {run['momentum']}" + (f", delta {run['delta']})" if run["delta"] else ")")
        ax.plot(points[:, 0], points[:, 1], "-", lw=1.2, color=colors[name], label=label)
        ax_loss.semilogy(run["losses"], color=colors[name], label=f"{name}: below 1e-6 from step {run['steps_to_threshold']}")
    ax.plot([-3.5], [2.0], "ko", ms=4)
    ax.plot([0], [0], "k*", ms=9)
    ax.set(xlabel="r", ylabel="theta", title=f"NL Eq. 53, k={landscape[0]}, a={landscape[1]}, omega={landscape[2]}")
    ax.legend(fontsize=8, loc="lower right")
    ax_loss.set(xlabel="step", ylabel="psi", title="loss (best grid setting of each)")
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=float, default=5.0)
    parser.add_argument("--a", type=float, default=1.0)
    parser.add_argument("--omega", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--threshold", type=float, default=1e-6)
    parser.add_argument("--out", default="docs/toy_landscape")
    args = parser.parse_args()
    torch.set_num_threads(1)
    landscape = (args.k, args.a, args.omega)
    runs = {"momentum": best((0.0,), landscape, args.steps, args.threshold),
            "delta momentum": best(DELTAS, landscape, args.steps, args.threshold)}
    same = trajectory(runs["delta momentum"]["lr"], runs["delta momentum"]["momentum"], 0.0, landscape, args.steps)
    summary = {
        "landscape": {"k": args.k, "a": args.a, "omega": args.omega, "start": [-3.5, 2.0]},
        "grid": {"lr": LRS, "momentum": MOMENTA, "delta": DELTAS}, "steps": args.steps, "threshold": args.threshold,
        "best": {name: {k: v for k, v in run.items() if k not in ("points", "losses")} for name, run in runs.items()},
        "momentum_at_delta_momentums_lr_and_alpha": None if same is None else steps_to(same[1], args.threshold),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(runs, landscape, out.with_suffix(".png"))
    for name, run in summary["best"].items():
        print(f"{name:15s} lr {run['lr']:<6} alpha {run['momentum']:<5} delta {run['delta']:<5} "
              f"below {args.threshold:g} from step {run['steps_to_threshold']}")
    same = summary["momentum_at_delta_momentums_lr_and_alpha"]
    print(f"momentum at delta momentum's lr and alpha: {'diverges' if same is None else f'settles at step {same}'}")
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
