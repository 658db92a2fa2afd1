"""The ``hope explore`` page (Gradio, extra ``explore``): seven chapters, each drawing what a library function
returns (``hope.explore.figures``, ``hope.explore.inspector``; docs/explore.md). Served on 127.0.0.1 only, with no
analytics, no share link and system fonts (nothing is fetched from the internet)."""

from __future__ import annotations

import functools
import math
import os

import torch
from matplotlib.figure import Figure

from hope.explore import figures as F
from hope.explore.inspector import inspect_handler, load_handler

SAMPLES = {
    "Repetition (a memory should learn it)": "The cat sat on the mat. The dog sat on the log. " * 6,
    "Prose": ("Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived "
              "in Liberty, and dedicated to the proposition that all men are created equal. Now we are engaged in a "
              "great civil war, testing whether that nation, or any nation so conceived and so dedicated, can long "
              "endure."),
    "Key-value list": " ".join(f"{k}={v};" for k, v in zip("abcdefghij", "3141592653")) * 3,
}
FIGSIZE = (9.5, 3.4)
(backprop_memory, nested_optimisation, optimiser_paths, momentum_contributions, continuum_memory, update_rules,
 needle_retrieval) = (functools.lru_cache(maxsize=256)(getattr(F, name)) for name in (
    "backprop_memory", "nested_optimisation", "optimiser_paths", "momentum_contributions", "continuum_memory",
    "update_rules", "needle_retrieval"))
"""Slider values are discrete: each figure's numbers are computed once per setting."""


def _figure(ncols: int = 2, height: float = FIGSIZE[1]) -> tuple[Figure, list]:
    """A bare matplotlib figure (no pyplot, no layout engine: drawing it stays well under a second)."""
    fig = Figure(figsize=(FIGSIZE[0], height), dpi=72)
    fig.subplots_adjust(left=0.07, right=0.97, bottom=0.15, top=0.9, wspace=0.3)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def draw_backprop(lr: float, steps: int) -> Figure:
    run = backprop_memory(lr, int(steps))
    fig, (ax, heat) = _figure()
    ax.semilogy(run["loss"])
    ax.set(xlabel="GD step", ylabel="mean loss", title=f"training loss (lr {lr:g})")
    image = heat.imshow(run["surprise"].T, aspect="auto", cmap="magma", interpolation="nearest")
    fig.colorbar(image, ax=heat, label="||dl_i / dy_i||")
    heat.set(xlabel="GD step", ylabel="input i", title="surprise of each input (NL Eq. 9)")
    return fig


def draw_nested(outer_period: int, inner_lr: float) -> Figure:
    run = nested_optimisation(int(outer_period), inner_lr)
    fig, (ax, ax_loss) = _figure()
    ax.plot(run["target"], "k:", label="target slope a_t")
    ax.plot(run["inner"], lw=1, label="inner memory w (every token)")
    ax.step(range(len(run["theta"])), run["theta"], where="post", lw=2, label=f"outer theta (every {outer_period})")
    ax.set(xlabel="token", title="two levels, two frequencies")
    ax.legend(fontsize=7)
    ax_loss.plot(run["loss"], lw=0.8)
    for t in run["outer_steps"]:
        ax_loss.axvline(t, color="0.85", lw=0.6, zorder=0)
    ax_loss.set(xlabel="token", ylabel="inner loss", yscale="log", title="loss (grey: outer steps, memory restarts)")
    return fig


def draw_optimisers(beta: float) -> Figure:
    paths, contributions = optimiser_paths(beta), momentum_contributions(beta)
    fig, (ax, ax_c) = _figure()
    r, theta = torch.meshgrid(torch.linspace(-4, 1.5, 120), torch.linspace(-3, 3, 120), indexing="xy")
    z = F.landscape(torch.stack([r, theta], dim=-1).double())
    ax.contour(r, theta, torch.log10(z + 1e-3), levels=20, cmap="Greys", linewidths=0.5)
    for name, run in paths.items():
        ax.plot(run["points"][:, 0], run["points"][:, 1], lw=1.2, label=name + (" (diverged)" if run["diverged"] else ""))
    ax.plot([0], [0], "k*")
    ax.set(xlim=(-4, 1.5), ylim=(-3, 3), xlabel="r", ylabel="theta", title="150 steps on NL Eq. 53's landscape")
    ax.legend(fontsize=7, loc="lower right")
    weights = contributions["weights"]
    ax_c.bar(range(len(weights)), weights, width=1.0, color="tab:blue")
    for n, style in ((contributions["n50"], "--"), (contributions["n99"], ":")):
        ax_c.axvline(n - 0.5, color="tab:red", ls=style)
    ax_c.set(xlabel="gradient age k (steps ago)", ylabel="weight in momentum",
             title=f"(1-b) b^k: 50% in {contributions['n50']}, 99% in {contributions['n99']} gradients")
    return fig


def draw_continuum(levels: int, forgetting: float) -> Figure:
    run = continuum_memory(int(levels), forgetting)
    fig, (ax, ax_n) = _figure()
    for j in range(run["loss"].shape[1]):
        ax.plot(run["loss"][:, j], label=f"task {j + 1}")
    for start in run["task_starts"][1:]:
        ax.axvline(start, color="0.8", lw=0.6)
    ax.set(xlabel="token", ylabel="loss on task", yscale="log", title=f"tasks in sequence, periods {run['periods']}")
    ax.legend(fontsize=7)
    for level, period in enumerate(run["periods"]):
        ax_n.plot(run["norms"][:, level], label=f"level period {period}")
    ax_n.set(xlabel="token", ylabel="||W_l||", title="what each level holds")
    ax_n.legend(fontsize=7)
    return fig


def draw_update_rules(dim: int, lr: float) -> Figure:
    runs = update_rules(int(dim), lr)
    fig, (ax,) = _figure(1)
    for name, errors in runs.items():
        ax.plot(range(1, len(errors) + 1), errors, label=name)
    ax.axvline(dim, color="0.7", ls="--", lw=0.8, label="pairs = memory size")
    ax.set(xlabel="pairs written", ylabel="recall error over pairs so far", yscale="log",
           title=f"memory size {int(dim)}, learning rate {lr:g}")
    ax.legend(fontsize=7)
    return fig


def draw_needle(levels: int, slowest: int) -> Figure:
    run = needle_retrieval(int(levels), 2 ** int(slowest))
    fig, (ax,) = _figure(1)
    ax.plot(run["contexts"], run["accuracy"], "o-", lw=2, color="k", label="levels summed")
    for period, accuracy in run["level_accuracy"].items():
        ax.plot(run["contexts"], accuracy, ".--", lw=1, label=f"level period {period} alone")
    ax.set(xscale="log", xlabel="context length (tokens after the needle)", ylabel="retrieval accuracy", ylim=(-0.02, 1.02),
           title="needle in a haystack: linear delta-rule memories at CMS periods (not a trained model)")
    ax.legend(fontsize=7)
    return fig


def _token_axis(ax, tokens: list[str], shown: int = 40) -> None:
    every = max(1, math.ceil(len(tokens) / shown))
    ax.set_xticks(range(0, len(tokens), every), [repr(t)[1:-1] for t in tokens[::every]], rotation=90, fontsize=6)


def draw_inspection(result: dict | None) -> tuple[Figure | None, Figure | None, Figure | None]:
    """Three figures of an inspection: losses, eta / alpha heat maps, memory norms and CMS steps."""
    if result is None:
        return None, None, None
    tokens = result["tokens"]
    losses, _ = _figure(1)
    ax = losses.axes[0]
    ax.plot(range(1, len(tokens)), result["loss_on"], lw=1, label="test-time learning on")
    if result["loss_off"] is not None:
        ax.plot(range(1, len(tokens)), result["loss_off"], lw=1, label="off")
        ax.plot(range(1, len(tokens)), result["loss_off"] - result["loss_on"], lw=1, label="off - on")
    ax.axhline(0, color="0.8", lw=0.5)
    ax.set(ylabel="next-token loss (nats)", title="per-token loss")
    ax.legend(fontsize=7)
    _token_axis(ax, tokens)
    gates = None
    if result["eta"] is not None:
        gates = Figure(figsize=(FIGSIZE[0], 4.6), dpi=90, layout="constrained")
        for i, name in enumerate(("eta", "alpha")):
            ax = gates.add_subplot(2, 1, i + 1)
            values = result[name].flatten(0, 1)
            image = ax.imshow(values, aspect="auto", cmap="viridis", interpolation="nearest")
            gates.colorbar(image, ax=ax, label=name)
            layers, heads = result[name].shape[:2]
            ax.set_yticks(range(layers * heads), [f"L{l} h{h}" for l in range(layers) for h in range(heads)], fontsize=6)
            ax.set_title(f"{name} per layer and head (blank: a chunk's last token, folded at once)", fontsize=9)
            _token_axis(ax, tokens)
    memory, (ax_n, ax_c) = _figure()
    if result["memory_norms"] is not None:
        for layer in range(result["memory_norms"].shape[1]):
            ax_n.plot(result["positions"], result["memory_norms"][:, layer], ".-", label=f"layer {layer}")
        ax_n.legend(fontsize=7)
    ax_n.set(xlabel="token", ylabel="||memory weights||", title="memory-weight norm along the text")
    for name, steps in result["cms_steps"].items():
        layer, level = name.split(".")
        lr = result["cms_lr"].get(layer, [])
        label = f"L{layer} level {level}" + (f" (eta {lr[int(level)]:.3g})" if int(level) < len(lr) else "")
        ax_c.plot(result["positions"][1:], steps, ".-", lw=0.8, label=label)
    if result["cms_steps"]:
        ax_c.legend(fontsize=6)
    ax_c.set(xlabel="token", ylabel="||delta W|| per piece", title="CMS fast-weight steps (NL Eq. 71)")
    return losses, gates, memory


def build_app(checkpoint: str | None = None):
    """The Gradio ``Blocks`` of ``hope explore`` (not launched)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    fonts = ["ui-sans-serif", "system-ui", "sans-serif"]
    theme = gr.themes.Default(font=fonts, font_mono=["ui-monospace", "monospace"])
    chapters = [
        ("1. Backpropagation is an associative memory", draw_backprop,
         [("learning rate", 0.01, 1.0, 0.2, 0.01), ("training steps", 10, 400, 150, 10)],
         "Training writes each input into the weights through its *surprise*, the error signal "
         "`grad_y L` (NL Eq. 9). Inputs that are fitted stop surprising the model. "
         "`hope.explore.figures.backprop_memory`."),
        ("2. Two levels, two frequencies", draw_nested,
         [("outer update period", 1, 40, 10, 1), ("inner learning rate", 0.0, 1.5, 0.5, 0.05)],
         "The outer parameter steps only every *C* tokens, by its period's gradients; the inner memory steps every "
         "token and restarts from it (a two-level CMS, NL Eq. 71). `hope.explore.figures.nested_optimisation`."),
        ("3. Optimisers are memories of gradients", draw_optimisers,
         [("momentum beta", 0.0, 0.99, 0.9, 0.01)],
         "SGD, momentum (`hope.optim.DeltaMomentum`, delta 0) and Adam on NL Eq. 53's landscape; right: the weight "
         "of each past gradient in the momentum memory, measured from the optimizer (NL Eqs. 10-13, 33), with the "
         "50% / 99% thresholds. `optimiser_paths`, `momentum_contributions`."),
        ("4. Continuum memory", draw_continuum,
         [("levels", 1, 4, 1, 1), ("forgetting per update", 0.0, 0.2, 0.05, 0.01)],
         "Tasks arrive in sequence; levels with periods 1, 4, 16, 64 step at their boundaries and forget once per "
         "update, so slow levels keep old tasks (NL Eqs. 70-71). `hope.explore.figures.continuum_memory`."),
        ("5. Update rules", draw_update_rules,
         [("memory size (key dimension)", 4, 48, 16, 4), ("learning rate", 0.1, 1.5, 0.9, 0.1)],
         "32 key-value pairs written by the Hebbian rule and the delta rule (`hope.ops.dgd`, NL Eqs. 64-65, 57) and "
         "by Hope's deep memory with DGD (`hope.ops.mlp_memory`, NL Eqs. 88-89). `update_rules`."),
        ("6. Hope's levels and retrieval", draw_needle,
         [("CMS levels", 1, 4, 3, 1), ("slowest period (log2)", 1, 9, 6, 1)],
         "Needle then haystack, read by linear delta-rule memories at CMS periods (the library's memories, "
         "`hope.ops.dgd`, not a trained model): slow levels forget less per token. `needle_retrieval`."),
    ]
    with gr.Blocks(title="hope explore", analytics_enabled=False) as app:
        gr.Markdown("# hope explore\nThe Nested Learning paper's claims, computed live by this library "
                    "(docs/explore.md). Drag a slider: the figure is recomputed.")
        for index, (title, draw, sliders, text) in enumerate(chapters, start=1):
            gr.Markdown(f"## {title}\n{text}")
            with gr.Row():
                inputs = [gr.Slider(low, high, value=value, step=step, label=label, elem_id=f"fig{index}-s{i}")
                          for i, (label, low, high, value, step) in enumerate(sliders)]
            plot = gr.Plot(elem_id=f"fig{index}", show_label=False)
            for slider in inputs:
                slider.change(draw, inputs, plot, show_progress="hidden")
            app.load(draw, inputs, plot)
        gr.Markdown("## 7. Inspector\nOpen a checkpoint (`hope train` writes them) and read a text: per-token loss with "
                    "test-time learning on and off, Hope's eta and alpha per head (read from its state), memory norms "
                    "and CMS steps. `hope.explore.inspector.inspect_text`.")
        loaded = gr.State(None)
        with gr.Row():
            path = gr.Textbox(value=checkpoint or "", label="checkpoint directory", elem_id="ckpt-path", scale=4)
            load = gr.Button("Load", elem_id="ckpt-load", scale=1)
        sample = gr.Dropdown(list(SAMPLES), value=list(SAMPLES)[0], label="pick a text", elem_id="sample")
        text = gr.Textbox(value=SAMPLES[list(SAMPLES)[0]], lines=4, label="text", elem_id="text")
        run = gr.Button("Inspect", elem_id="inspect")
        status = gr.Markdown(elem_id="status")
        plots = [gr.Plot(elem_id=f"fig7-{name}", show_label=False) for name in ("loss", "gates", "memory")]
        sample.change(lambda name: SAMPLES[name], sample, text)

        def on_inspect(value, t):
            result, message = inspect_handler(value, t)
            return (message, *draw_inspection(result))

        load.click(load_handler, path, [loaded, status])
        run.click(on_inspect, [loaded, text], [status, *plots])
        if checkpoint:
            app.load(load_handler, path, [loaded, status]).then(on_inspect, [loaded, text], [status, *plots])
    return app, theme


def serve(checkpoint: str | None, port: int, share_nothing: bool) -> None:
    """Serve the page on 127.0.0.1:``port`` until interrupted."""
    if share_nothing:
        os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", DO_NOT_TRACK="1",
                          GRADIO_ANALYTICS_ENABLED="False")
    torch.set_num_threads(1)
    app, theme = build_app(checkpoint)
    app.launch(server_name="127.0.0.1", server_port=port, share=False, inbrowser=False, show_error=True, theme=theme, ssr_mode=False, enable_monitoring=False,
               footer_links=[])
