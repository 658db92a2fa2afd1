"""Self-modifying Titans (NL Eqs. 83-97) against a per-token reference written from the equations."""

import pytest
import torch
import torch.nn.functional as F

from hope.errors import HopeError
from hope.models import build, make_config
from hope.models.hope.self_modifying_titans import SelfModifyingTitans

D_MODEL, HEADS = 16, 2
BASE = dict(objective="dot", curvature=False, memory_read="start")
"""The layer these tests were written for (each case overrides what it checks): the dot objective, no curvature
in the proximal step, reads of M_mem at the chunk start."""
SILU_MAX_SLOPE = 1.0998393201285286


def silu_grad(z):
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def dgd_step(w, u, error, alpha, eta, proximal, dgd, gain=0.0):
    """One DGD step on one linear layer (NL Eq. 57 / 88): ``w: [N, O, I]``, input ``u: [N, I]``, back-propagated
    error ``error: [N, O]``, per-memory ``alpha, eta: [N]``; ``gain`` (``[N]`` or a float): the objective's
    curvature that the proximal step counts (``curvature=True``)."""
    if proximal:
        eta = eta / (1 + eta * (1 + gain) * (u * u).sum(-1))
    alpha, eta = alpha[:, None, None], eta[:, None, None]
    new = alpha * w - eta * error[:, :, None] * u[:, None, :]
    if dgd:
        new = new - eta * (w @ u[:, :, None]) * u[:, None, :]
    return new


class Reference:
    """The layer one token at a time, from the equations: no chunked op, no buffers, no segment loop."""

    def __init__(self, layer: SelfModifyingTitans, batch: int, cut_every: int | None = None) -> None:
        """``cut_every``: the state is detached before every token at a multiple of it (a truncated gradient)."""
        self.layer, self.kind, self.cut_every = layer, layer.banks["mem"].kind, cut_every
        self.state = {group: {key: getattr(bank, key).expand(batch, *getattr(bank, key).shape).clone()
                              for key in bank.keys} for group, bank in layer.banks.items()}
        self.start = {g: dict(w) for g, w in self.state.items()}
        self.velocity = {g: {key: torch.zeros_like(w) for key, w in ws.items()} for g, ws in self.state.items()}
        self.betas = {g: [] for g in self.state}
        self.history = []

    def read(self, weights, x):
        """Memory reads for stacked heads: ``x: [B, N, D]`` (written out, not ``residual_mlp``: the reference
        shares no code with the layer)."""
        if self.kind == "linear":
            return (weights["w"] @ x[..., None])[..., 0]
        return x + (weights["w1"] @ F.silu(weights["w2"] @ x[..., None]))[..., 0]

    def update(self, weights, running, key, target, alpha, eta):
        """Per-token DGD of every memory of a group; gradients at the chunk-start ``weights``."""
        layer = self.layer
        objective = layer.banks["mem"].objective
        proximal, dgd = layer.banks["mem"].proximal, layer.banks["mem"].dgd
        curved = layer.banks["mem"].curvature and objective == "l2"
        alpha, eta = alpha.reshape(-1), eta.reshape(-1)
        flat = lambda t: t.reshape(-1, *t.shape[2:])
        if self.kind == "linear":
            error = -target if objective == "dot" else self.read(weights, key) - target
            return {"w": dgd_step(flat(running["w"]), flat(key), flat(error), alpha, eta, proximal, dgd,
                                  1.0 if curved else 0.0).view_as(running["w"])}
        z = (weights["w2"] @ key[..., None])[..., 0]
        hidden = F.silu(z)
        error = -target if objective == "dot" else key + (weights["w1"] @ hidden[..., None])[..., 0] - target
        error2 = (weights["w1"].transpose(-1, -2) @ error[..., None])[..., 0] * silu_grad(z)
        gain2 = SILU_MAX_SLOPE ** 2 * flat(weights["w1"]).square().sum((-2, -1)) if curved else 0.0
        w1 = dgd_step(flat(running["w1"]), flat(hidden), flat(error), alpha, eta, proximal, dgd, 1.0 if curved else 0.0)
        w2 = dgd_step(flat(running["w2"]), flat(key), flat(error2), alpha, eta, proximal, dgd, gain2)
        return {"w1": w1.view_as(running["w1"]), "w2": w2.view_as(running["w2"])}

    def __call__(self, x):
        layer, (b, t, _) = self.layer, x.shape
        h, d = layer.n_heads, layer.head_dim
        static = None if layer.static is None else layer.static(x).view(b, t, -1, h, d)
        width = layer.conv.width
        outputs = []
        proj = layer.banks["proj"]
        memories = len(proj.names)
        for i in range(t):
            if self.cut_every and i and i % self.cut_every == 0:
                self.detach()
            if layer.memory_inputs is None:  # memory_input="head": head h reads x's h-th slice
                inputs = x[:, i].view(b, h, d).repeat(1, memories, 1)
            else:  # "full": one map of all of x (shared, or one per memory), cut into heads
                inputs = (x[:, i] @ layer.memory_inputs.weight.T).view(b, -1, d)
                inputs = inputs.repeat(1, memories * h // inputs.shape[1], 1)
            raw = self.read(self.start["proj"], inputs).view(b, -1, h, d)
            source = {name: raw[:, j] for j, name in enumerate(proj.names)}
            source.update({name: static[:, i, j] for j, name in enumerate(layer.static_names)})
            self.history.append(torch.cat([source[n].reshape(b, -1) for n in ("k", "v", "q")], -1))
            window = [self.history[i - width + 1 + j] if i - width + 1 + j >= 0 else torch.zeros_like(self.history[0])
                      for j in range(width)]
            kvq = F.silu(sum(layer.conv.weight[:, j] * window[j] for j in range(width))).view(b, 3, h, d)
            k, v, q = kvq.unbind(1)
            k, q = (u / (u.square().sum(-1, keepdim=True) + 1e-6).sqrt() for u in (k, q))
            if layer.normalize_v:
                v = v / (v.square().sum(-1, keepdim=True) + 1e-6).sqrt()
            gate = {}
            for g, name in enumerate(layer.gate_names):
                read = source["alpha" if name == "alpha" else "eta"]
                logit = (read * layer.readout[g]).sum(-1) + layer.readout_bias[g]
                gate[name] = torch.sigmoid(logit) if layer.sigmoid_gates else logit
            alpha = gate.get("alpha", torch.ones_like(gate["eta"]))
            mode = layer.banks["mem"].read_mode if layer.test_time_learning else "start"
            if mode == "start":
                outputs.append(self.read(self.start["mem"], q))
            elif mode == "previous":  # M_{mem,t-1}(q_t): before this token's update (NL Eq. 94)
                outputs.append(self.read(self.state["mem"], q))
            if not layer.test_time_learning:
                continue
            for group, bank in layer.banks.items():
                n = len(bank.names)
                values = v.repeat(1, n, 1)
                target = self.read(self.start[group], values) if layer.self_targets else values
                self.state[group] = self.update(self.start[group], self.state[group], k.repeat(1, n, 1), target,
                                                alpha.repeat(1, n), gate["eta"].repeat(1, n))
                if group == "mem" and mode == "running":  # read after this token's update, before the chunk's momentum
                    outputs.append(self.read(self.state["mem"], q))
                if layer.momentum:
                    self.betas[group].append(gate["beta"].repeat(1, n))
                if (i + 1) % layer.chunk_sizes[group] == 0:
                    self.end_chunk(group)
        reads = torch.stack(outputs, 1)
        return layer.output(reads, x)

    def detach(self):
        for states in (self.state, self.start, self.velocity):
            for group in states:
                states[group] = {key: w.detach() for key, w in states[group].items()}
        self.betas = {g: [b.detach() for b in betas] for g, betas in self.betas.items()}
        self.history = [h.detach() for h in self.history]

    def end_chunk(self, group):
        if self.layer.momentum:
            beta = torch.stack(self.betas[group], 1).mean(1)[..., None, None]
            for key in self.state[group]:
                self.velocity[group][key] = beta * self.velocity[group][key] + self.state[group][key] - self.start[group][key]
                self.state[group][key] = self.start[group][key] + self.velocity[group][key]
            self.betas[group] = []
        bound = self.layer.max_norm
        for key, w in self.state[group].items():  # onto the ball ||W||_F <= c sqrt(min(r, c)), head by head
            if bound is not None:
                radius = bound * min(w.shape[-2:]) ** 0.5
                norm = w.square().sum((-2, -1), keepdim=True).sqrt()
                self.state[group][key] = torch.where(norm > radius, w * radius / norm, w)
        self.start[group] = dict(self.state[group])


def self_modifying_titans(**fields) -> SelfModifyingTitans:
    return SelfModifyingTitans(make_config("hope", None, d_model=D_MODEL, n_heads=HEADS, **{**BASE, **fields}))


def make(**kwargs):
    torch.manual_seed(1)
    layer = self_modifying_titans(**kwargs).double()
    with torch.no_grad():  # livelier gates than the defaults, so every term matters (linear gates stay near
        layer.readout.normal_(std=0.5 if layer.sigmoid_gates else 0.05)  # their initial values, which keep it finite)
    return layer


BINDING_BOUNDS = [
    dict(memory="deep", chunk_size=3, memory_chunk_size=2, objective="l2", curvature=True, memory_read="previous",
         memory_max_norm=0.3),
    dict(memory="deep", chunk_size=2, memory_chunk_size=3, memory_max_norm=0.2, momentum=False),
    dict(memory="linear", chunk_size=3, memory_chunk_size=4, objective="l2", memory_max_norm=0.5),
]
"""Configs whose ``memory_max_norm`` is small enough to bind inside 13 tokens (checked by
``test_memory_bound_binds_and_holds``)."""

CONFIGS = [
    dict(memory="linear", chunk_size=1, memory_chunk_size=1),
    dict(memory="linear", chunk_size=3, memory_chunk_size=5),
    dict(memory="linear", chunk_size=4, memory_chunk_size=4, objective="l2", proximal=False),
    dict(memory="linear", chunk_size=3, memory_chunk_size=2, objective="l2", curvature=True),
    dict(memory="linear", chunk_size=2, memory_chunk_size=3, dgd=False, momentum=False, retention=False),
    dict(memory="linear", chunk_size=3, memory_chunk_size=2, adaptive_q=True, adaptive_k=False, adaptive_v=False),
    dict(memory="deep", chunk_size=1, memory_chunk_size=1),
    dict(memory="deep", chunk_size=3, memory_chunk_size=5, memory_expansion=2),
    dict(memory="deep", chunk_size=4, memory_chunk_size=2, objective="l2", dgd=False),
    dict(memory="deep", chunk_size=3, memory_chunk_size=2, objective="l2", curvature=True),
    dict(memory="deep", chunk_size=1, memory_chunk_size=1, objective="l2", curvature=True, memory_expansion=2),
    dict(memory="deep", chunk_size=3, memory_chunk_size=4, objective="l2", curvature=True, memory_read="running"),
    dict(memory="deep", chunk_size=2, memory_chunk_size=5, memory_read="running", momentum=False),
    dict(memory="linear", chunk_size=3, memory_chunk_size=4, objective="l2", memory_read="running"),
    dict(memory="deep", chunk_size=3, memory_chunk_size=4, objective="l2", curvature=True, memory_read="previous"),
    dict(memory="deep", chunk_size=2, memory_chunk_size=5, memory_read="previous", momentum=False),
    dict(memory="deep", chunk_size=1, memory_chunk_size=1, objective="l2", memory_read="previous"),
    dict(memory="linear", chunk_size=3, memory_chunk_size=4, objective="l2", memory_read="previous"),
    dict(memory="deep", chunk_size=2, memory_chunk_size=3, proximal=False, momentum=False, retention=False,
         adaptive_q=True, adaptive_v=False),
    dict(memory="deep", chunk_size=3, memory_chunk_size=3, test_time_learning=False),
    dict(memory="deep", chunk_size=3, memory_chunk_size=4, objective="l2", curvature=True, memory_input="head"),
    dict(memory="linear", chunk_size=3, memory_chunk_size=2, memory_input="head", memory_read="previous"),
    dict(memory="deep", chunk_size=2, memory_chunk_size=3, objective="l2", memory_input="full-separate",
         memory_read="previous"),
    dict(memory="deep", chunk_size=3, memory_chunk_size=2, objective="l2", curvature=True, normalize_v=False),
    dict(memory="deep", chunk_size=2, memory_chunk_size=4, objective="l2", sigmoid_gates=False, memory_read="previous"),
    dict(memory="linear", chunk_size=3, memory_chunk_size=2, objective="l2", sigmoid_gates=False, normalize_v=False,
         memory_input="full-separate"),
    dict(memory="linear", chunk_size=3, memory_chunk_size=2, self_targets=False, memory_read="running"),
    dict(memory="deep", chunk_size=2, memory_chunk_size=3, objective="l2", self_targets=False, memory_read="previous"),
    *BINDING_BOUNDS,
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_matches_per_token_reference_outputs_and_gradients(config):
    layer = make(**config)
    x = torch.randn(2, 13, D_MODEL, dtype=torch.float64, requires_grad=True)
    y, _ = layer(x)
    expected = Reference(layer, 2)(x)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    weight = torch.randn_like(y)
    params = [x] + list(layer.parameters())
    grads = torch.autograd.grad((y * weight).sum(), params, allow_unused=True)
    expected_grads = torch.autograd.grad((expected * weight).sum(), params, allow_unused=True)
    for got, want in zip(grads, expected_grads):
        if want is None:  # without test-time learning the momentum gate is unused
            assert got is None
        else:
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[6], CONFIGS[8], CONFIGS[11], CONFIGS[14], CONFIGS[17],
                                    CONFIGS[21], CONFIGS[22], CONFIGS[24]],
                         ids=["linear", "deep", "ablations", "deep-running", "deep-previous", "linear-previous",
                              "head-input", "separate-input", "linear-gates"])
def test_prefill_then_decode_equals_one_forward_at_any_cut(config):
    layer = make(**config)
    x = torch.randn(2, 17, D_MODEL, dtype=torch.float64)
    full, _ = layer(x)
    for cut in (1, 4, 7, 15):
        y, state = layer(x[:, :cut])
        pieces, start = [y], cut
        while start < 17:  # decode in pieces of 1 and 2 tokens
            end = start + 1 + (start % 3 == 0)
            y, state = layer(x[:, start:end], state)
            pieces.append(y)
            start = end
        torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("memory", ["deep", "linear"])
@pytest.mark.parametrize("memory_read", ["previous", "running", "start"])
def test_hope_prefill_then_decode_equals_one_forward_for_every_read(memory, memory_read):
    """The contract of ``hope.models`` for the whole model: prompt prefill, then token-by-token decoding, gives
    the logits of one forward, for each ``memory_read``."""
    torch.manual_seed(0)
    model = build("hope", None, vocab_size=23, d_model=D_MODEL, n_layers=2, n_heads=HEADS, memory=memory,
                  chunk_size=3, memory_chunk_size=4, cms_periods=(None, 3, 6), cms_lr=0.5,
                  memory_read=memory_read).double()
    ids = torch.randint(0, 23, (2, 15))
    with torch.no_grad():
        full = model(ids).logits
        for cut in (1, 6, 9):
            out = model(ids[:, :cut])
            pieces, state = [out.logits], out.state
            for t in range(cut, ids.shape[1]):
                out = model(ids[:, t : t + 1], state=state)
                pieces.append(out.logits)
                state = out.state
            torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-9, atol=1e-10)


def test_decode_state_stays_bounded():
    layer = make(memory="deep", chunk_size=4, memory_chunk_size=8)
    _, state = layer(torch.randn(1, 5, D_MODEL, dtype=torch.float64))
    sizes = set()
    for _ in range(40):
        _, state = layer(torch.randn(1, 1, D_MODEL, dtype=torch.float64), state)
        sizes.add(sum(t.numel() for t in state.to_flat().values()))
    assert max(memory.pending.k.shape[1] for memory in state.memories.values()) < 8 and len(sizes) <= 8 * 4


@pytest.mark.parametrize("config", BINDING_BOUNDS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_memory_bound_binds_and_holds(config):
    """The reference tests above exercise the projection: in these configs it binds on some head (a weight on
    the sphere of radius ``memory_max_norm * sqrt(min(r, c))``) and no head leaves the ball."""
    layer = make(**config)
    _, state = layer(torch.randn(2, 13, D_MODEL, dtype=torch.float64))
    ratios = []
    for memory in state.memories.values():
        for weight in memory.weights.values():
            radius = config["memory_max_norm"] * min(weight.shape[-2:]) ** 0.5
            ratios.append(torch.linalg.vector_norm(weight, dim=(-2, -1)) / radius)
    ratios = torch.cat([r.flatten() for r in ratios])
    assert ratios.max() <= 1 + 1e-12 and torch.isclose(ratios.max(), torch.tensor(1.0, dtype=ratios.dtype))


def test_long_stream_stays_finite_only_with_the_bound():
    """A stream of 2,048 tokens through memories set up to grow (a linear read-out with eta = 3, no proximal
    step, no retention): without the bound their weights overflow; with the default bound every weight stays
    on its ball and the outputs finite."""
    def run(bound):
        torch.manual_seed(0)
        layer = self_modifying_titans(memory="deep", chunk_size=8, memory_chunk_size=8, objective="l2",
                                      sigmoid_gates=False, proximal=False, curvature=False, retention=False,
                                      normalize_v=False, memory_max_norm=bound)
        state, largest, finite = None, 0.0, True
        with torch.no_grad():
            layer.readout_bias[layer.gate_names.index("eta")] = 3.0
            for _ in range(32):
                y, state = layer(torch.randn(1, 64, D_MODEL), state)
                finite &= bool(torch.isfinite(y).all())
                largest = max([largest] + [float(w.abs().max().nan_to_num(float("inf")))
                                           for m in state.memories.values() for w in m.weights.values()])
        return largest, finite

    unbounded, _ = run(None)
    bounded, finite = run(4.0)
    assert not unbounded < 1e6  # overflowed (inf / nan) or huge
    assert finite and bounded <= 4.0 * (D_MODEL // HEADS) ** 0.5


def test_causal_and_batch_isolated():
    layer = make(memory="deep", chunk_size=2, memory_chunk_size=4)
    x = torch.randn(2, 12, D_MODEL, dtype=torch.float64)
    base, _ = layer(x)
    changed = x.clone()
    changed[0, 6] += 1.0
    out, _ = layer(changed)
    assert torch.equal(out[0, :6], base[0, :6]) and not torch.allclose(out[0, 6:], base[0, 6:])
    assert torch.equal(out[1], base[1])


@pytest.mark.parametrize("memory", ["deep", "linear"])
def test_gradients_reach_every_meta_learned_initial_state(memory):
    layer = make(memory=memory, chunk_size=2, memory_chunk_size=3, adaptive_q=True)
    y, _ = layer(torch.randn(2, 12, D_MODEL, dtype=torch.float64))
    y.square().sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
        if name.startswith("banks."):  # every memory of every bank, head by head
            assert (param.grad.flatten(1).abs().sum(1) > 0).all(), name


def with_params_of(layer, source):
    """Copy the parameters of ``source`` that ``layer`` shares by name and shape."""
    theirs = dict(source.named_parameters())
    with torch.no_grad():
        for name, param in layer.named_parameters():
            if name in theirs and theirs[name].shape == param.shape:
                param.copy_(theirs[name])
    return layer


def test_momentum_flag_is_the_momentum_and_nothing_else():
    with_momentum = make(memory="deep", chunk_size=2, memory_chunk_size=3)
    without = with_params_of(make(memory="deep", chunk_size=2, memory_chunk_size=3, momentum=False), with_momentum)
    with torch.no_grad():
        without.readout.copy_(with_momentum.readout[:2])
        without.readout_bias.copy_(with_momentum.readout_bias[:2])
    x = torch.randn(2, 11, D_MODEL, dtype=torch.float64)
    assert not torch.allclose(with_momentum(x)[0], without(x)[0])
    with torch.no_grad():  # beta = 0: momentum adds nothing
        with_momentum.readout_bias[2].fill_(-torch.inf)
    torch.testing.assert_close(with_momentum(x)[0], without(x)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("memory_input", ["full", "full-separate", "head"])
def test_retention_flag_removes_alpha_and_nothing_else(memory_input):
    kept = make(memory="linear", chunk_size=2, memory_chunk_size=3, momentum=False, memory_input=memory_input)
    dropped = with_params_of(make(memory="linear", chunk_size=2, memory_chunk_size=3, momentum=False,
                                  retention=False, memory_input=memory_input), kept)
    with torch.no_grad():
        dropped.banks["proj"].w.copy_(kept.banks["proj"].w[: 3 * HEADS])  # memories k, v, eta (alpha is last)
        if memory_input == "full-separate":
            dropped.memory_inputs.weight.copy_(kept.memory_inputs.weight[: 3 * D_MODEL])
        dropped.readout.copy_(kept.readout[:1])
        dropped.readout_bias.copy_(kept.readout_bias[:1])
    x = torch.randn(2, 11, D_MODEL, dtype=torch.float64)
    assert not torch.allclose(kept(x)[0], dropped(x)[0])
    with torch.no_grad():  # alpha = 1 everywhere
        kept.readout_bias[1].fill_(torch.inf)
    torch.testing.assert_close(kept(x)[0], dropped(x)[0], rtol=1e-12, atol=1e-12)


def test_dgd_flag_drops_only_the_erase_term():
    on = make(memory="deep", chunk_size=2, memory_chunk_size=2)
    off = with_params_of(make(memory="deep", chunk_size=2, memory_chunk_size=2, dgd=False), on)
    x = torch.randn(2, 9, D_MODEL, dtype=torch.float64)
    y_on, y_off = on(x)[0], off(x)[0]
    torch.testing.assert_close(y_on[:, :2], y_off[:, :2], rtol=0, atol=0)  # first chunk: nothing learned yet
    assert not torch.allclose(y_on[:, 2:], y_off[:, 2:])


@pytest.mark.parametrize("memory", ["linear", "deep"])
def test_self_targets_flag_changes_only_the_targets(memory):
    """Without self-generated targets a memory's fold writes ``v`` itself: the same as a fold with the targets
    ``M(v)`` replaced by ``v``, and different from the default once a chunk is learned."""
    on = make(memory=memory, chunk_size=2, memory_chunk_size=2)
    off = with_params_of(make(memory=memory, chunk_size=2, memory_chunk_size=2, self_targets=False), on)
    x = torch.randn(2, 9, D_MODEL, dtype=torch.float64)
    y_on, y_off = on(x)[0], off(x)[0]
    torch.testing.assert_close(y_on[:, :2], y_off[:, :2], rtol=0, atol=0)  # first chunk: nothing learned yet
    assert not torch.allclose(y_on[:, 2:], y_off[:, 2:])
    bank = off.banks["mem"]
    weights = bank.initial(2)
    chunk = {name: torch.rand(2, 2, HEADS, *(() if name in ("alpha", "eta", "beta") else (D_MODEL // HEADS,)),
                              dtype=torch.float64) for name in off.buffered}
    _, folded, _ = off._fold("mem", weights, {key: torch.zeros_like(w) for key, w in weights.items()}, chunk)
    _, expected = bank.fold(weights, chunk["k"], chunk["v"], chunk["alpha"], chunk["eta"])
    for key in bank.keys:  # momentum from zero velocity adds nothing to the first fold's step
        torch.testing.assert_close(folded[key], off._bounded({key: expected[key]})[key], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("memory_input", ["head", "full-separate"])
@pytest.mark.parametrize("projection", ["q", "k", "v"])
def test_adaptive_and_static_projections(projection, memory_input):
    """A projection that is a memory equals the static projection with the same weights (the block-diagonal
    memories after the memory's input map) while nothing is learned; with learning, only the adaptive one changes
    in context."""
    flag = f"adaptive_{projection}"
    base = dict(memory="linear", chunk_size=2, memory_chunk_size=2, memory_input=memory_input)
    adaptive = make(**base, **{flag: True})
    static = with_params_of(make(**base, **{flag: False}), adaptive)
    names = adaptive.banks["proj"].names
    index = names.index(projection)
    memory_init = adaptive.banks["proj"].w[index * HEADS:(index + 1) * HEADS]
    weight = torch.block_diag(*memory_init)
    if memory_input == "full-separate":
        weight = weight @ adaptive.memory_inputs.weight[index * D_MODEL:(index + 1) * D_MODEL]
    with torch.no_grad():
        rows = static.static_names.index(projection) * D_MODEL
        static.static.weight[rows:rows + D_MODEL] = weight
        for i, name in enumerate(adaptive.static_names):
            j = static.static_names.index(name)
            static.static.weight[j * D_MODEL:(j + 1) * D_MODEL] = adaptive.static.weight[i * D_MODEL:(i + 1) * D_MODEL]
        kept = [i for i, name in enumerate(names) if name != projection]
        static.banks["proj"].w.copy_(torch.cat([adaptive.banks["proj"].w[i * HEADS:(i + 1) * HEADS] for i in kept]))
        if memory_input == "full-separate":
            static.memory_inputs.weight.copy_(torch.cat([adaptive.memory_inputs.weight[i * D_MODEL:(i + 1) * D_MODEL]
                                                         for i in kept]))
    x = torch.randn(2, 9, D_MODEL, dtype=torch.float64)
    y_adaptive, y_static = adaptive(x)[0], static(x)[0]
    torch.testing.assert_close(y_adaptive[:, :2], y_static[:, :2], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(y_adaptive[:, 2:], y_static[:, 2:])
    for layer in (adaptive, static):
        layer.test_time_learning = False
    torch.testing.assert_close(adaptive(x)[0], static(x)[0], rtol=1e-12, atol=1e-12)


def keys_values_and_gates(mixer, x):
    """The projection memories' outputs at their initial state (keys, values, queries, gates), per head."""
    b, t, _ = x.shape
    static = None if mixer.static is None else mixer.static(x).view(b, t, -1, mixer.n_heads, mixer.head_dim)
    features, _ = mixer._features(mixer._memory_inputs(x), static, mixer.banks["proj"].shared(), None)
    return features


@pytest.mark.parametrize("memory_input", ["full", "full-separate", "head"])
def test_every_memory_reads_all_of_x(memory_input):
    """NL Eqs. 83-85 (``k_t = M_k(x_t)``): changing head 1's channels of ``x`` moves the keys, values and gates
    of every head under ``memory_input="full"`` (the default); under ``"head"`` head 0's stay as they were."""
    config = {} if memory_input == "full" else dict(memory_input=memory_input)
    model = build("hope", "tiny", vocab_size=37, **config)
    mixer = model.blocks[0].mixer
    assert model.config.memory_input == memory_input
    d = mixer.head_dim
    x = torch.randn(2, 5, model.config.d_model)
    changed = x.clone()
    changed[..., d:2 * d] += torch.randn_like(changed[..., d:2 * d])
    with torch.no_grad():
        before, after = keys_values_and_gates(mixer, x), keys_values_and_gates(mixer, changed)
    for name in ("k", "v", "eta", "alpha", "beta"):
        change = (before[name] - after[name]).abs()
        moved = (change.amax(-1) if change.ndim == 4 else change).amax((0, 1)) > 1e-6  # per head
        if memory_input == "head":
            assert moved.tolist() == [False, True, False, False], name
        else:
            assert moved.all(), name


def test_test_time_learning_false_freezes_every_memory():
    learning = make(memory="deep", chunk_size=2, memory_chunk_size=3)
    frozen = with_params_of(make(memory="deep", chunk_size=2, memory_chunk_size=3, test_time_learning=False), learning)
    never_folds = with_params_of(make(memory="deep", chunk_size=64, memory_chunk_size=64), learning)
    x = torch.randn(2, 10, D_MODEL, dtype=torch.float64)
    y_frozen, state = frozen(x)
    assert state.memories == {}
    torch.testing.assert_close(y_frozen, never_folds(x)[0], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(y_frozen, learning(x)[0])


def test_linear_dot_memory_steps_down_the_gradient_of_minus_inner_product():
    """Hope's linear memories under ``objective="dot"`` (one token, no retention, DGD term or proximal step):
    ``M <- M - eta grad`` with ``grad`` of ``-<M k, v_hat>`` by autograd, i.e. ``M + eta v_hat k^T``: the sign that
    Eq. 92 prints as ``-`` (docs/paper_notes.md A4)."""
    bank = self_modifying_titans(memory="linear", objective="dot", proximal=False, dgd=False, retention=False,
                                 chunk_size=1, memory_chunk_size=1).double().banks["mem"]
    d = D_MODEL // HEADS
    w = (bank.initial(2)["w"] + 0.3 * torch.randn(2, HEADS, d, d, dtype=torch.float64)).requires_grad_()
    keys = F.normalize(torch.randn(2, 1, HEADS, d, dtype=torch.float64), dim=-1)
    targets = torch.randn(2, 1, HEADS, d, dtype=torch.float64)
    eta = torch.rand(2, 1, HEADS, dtype=torch.float64)
    (grad,) = torch.autograd.grad(-(torch.einsum("bhvk,bhk->bhv", w, keys[:, 0]) * targets[:, 0]).sum(), w)
    _, new = bank.fold({"w": w.detach()}, keys, targets, torch.ones_like(eta), eta)
    torch.testing.assert_close(new["w"], w.detach() - eta[:, 0, :, None, None] * grad, rtol=1e-12, atol=1e-12)


def test_bad_arguments():
    with pytest.raises(HopeError, match="memory"):
        self_modifying_titans(memory="matrix")
    with pytest.raises(HopeError, match="divisible"):
        make_config("hope", None, d_model=15, n_heads=2)
    with pytest.raises(ValueError, match=r"x must be \[batch, time, 16\]"):
        self_modifying_titans()(torch.randn(2, 3, 8))


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), True, "wide"])
def test_a_bad_memory_input_std_is_a_clear_error(value):
    with pytest.raises(HopeError, match="memory_input_std must be a"):
        make_config("hope", None, memory_input_std=value)


def test_memory_input_std_sets_the_spread_of_every_deep_memorys_initial_input_layer():
    torch.manual_seed(0)
    default = SelfModifyingTitans(make_config("hope", None, d_model=64, n_heads=2))
    wide = SelfModifyingTitans(make_config("hope", None, d_model=64, n_heads=2, memory_input_std=1.0))
    for bank in (default.banks[name] for name in default.banks):
        assert bank.w2.std().item() == pytest.approx(32 ** -0.5, rel=0.1)
    for bank in (wide.banks[name] for name in wide.banks):
        assert bank.w2.std().item() == pytest.approx(1.0, rel=0.1)
