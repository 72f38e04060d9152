"""The transformer: packed tokens in, hidden states or last-token logits out."""

from __future__ import annotations

import types

import torch
from torch import nn

from node.kernels import AttentionMeta, Kernels, TorchKernels
from node.model.rope import RotaryTable
from parallax.errors import ConfigError
from parallax.models.spec import ModelSpec
from parallax.types import LayerRange

# Layers per compiled decode graph. Each graph call costs ~0.1 ms of guards and
# wrappers (measured per layer: half the non-matmul time of a compiled q4 layer); a
# graph of 6 layers pays it 5 times for SmolLM2's 30 and compiles in a fifth of the
# whole stack's time.
COMPILE_GROUP = 6


def _run_group(layers: list, kv: list, x, cos, sin, meta: AttentionMeta, kernels: Kernels):
    for layer, (k_cache, v_cache) in zip(layers, kv, strict=True):
        x = layer(x, cos, sin, k_cache, v_cache, meta, kernels)
    return x


def _groups(a: int, b: int, size: int) -> list[tuple[int, int]]:
    """[a, b) as full groups of `size`, then single layers (one graph per group size)."""
    full = a + (b - a) // size * size
    return [(i, i + size) for i in range(a, full, size)] + [(i, i + 1) for i in range(full, b)]


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.nq, self.nkv, self.d = (
            spec.num_attention_heads,
            spec.num_key_value_heads,
            spec.head_dim,
        )
        # q, k and v are one fused matmul: fewer kernel launches per layer.
        out = (self.nq + 2 * self.nkv) * self.d
        self.qkv = nn.Linear(spec.hidden_size, out, bias=spec.attention_bias)
        self.o_proj = nn.Linear(self.nq * self.d, spec.hidden_size, bias=False)
        if spec.qk_norm:
            self.q_norm = nn.Parameter(torch.ones(self.d))
            self.k_norm = nn.Parameter(torch.ones(self.d))
        self.scale = self.d**-0.5

    def forward(self, x, cos, sin, k_cache, v_cache, meta: AttentionMeta, kernels: Kernels):
        t, nq = x.shape[0], self.nq
        heads = self.qkv(x).view(t, nq + 2 * self.nkv, self.d)
        qk, v = heads[:, : nq + self.nkv], heads[:, nq + self.nkv :]
        if self.spec.qk_norm:
            q = kernels.rms_norm(qk[:, :nq], self.q_norm, self.spec.rms_norm_eps)
            k = kernels.rms_norm(qk[:, nq:], self.k_norm, self.spec.rms_norm_eps)
            qk = torch.cat((q, k), 1)
        # q and k rotate together: one set of ops over all their heads, not two.
        qk = kernels.rotary(qk, cos, sin)
        q, k = qk[:, :nq], qk[:, nq:]
        o = kernels.attention(q, k, v.contiguous(), k_cache, v_cache, meta, self.scale)
        return self.o_proj(o.reshape(t, self.nq * self.d))


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.inter = spec.intermediate_size
        self.gate_up = nn.Linear(spec.hidden_size, 2 * spec.intermediate_size, bias=False)
        self.down_proj = nn.Linear(spec.intermediate_size, spec.hidden_size, bias=False)

    def forward(self, x, kernels: Kernels):
        return self.down_proj(kernels.silu_mul(self.gate_up(x)))


class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.eps = spec.rms_norm_eps
        self.self_attn = Attention(spec)
        self.mlp = MLP(spec)
        self.input_layernorm = nn.Parameter(torch.ones(spec.hidden_size))
        self.post_attention_layernorm = nn.Parameter(torch.ones(spec.hidden_size))

    def forward(self, x, cos, sin, k_cache, v_cache, meta, kernels: Kernels):
        h = kernels.rms_norm(x, self.input_layernorm, self.eps)
        a = self.self_attn(h, cos, sin, k_cache, v_cache, meta, kernels)
        h, x = kernels.add_rms_norm(a, x, self.post_attention_layernorm, self.eps)
        return x + self.mlp(h, kernels)


class ShardModel(nn.Module):
    """Layers `[start, end)` of a model; embedding only if first, head only if last."""

    def __init__(self, spec: ModelSpec, layers: LayerRange, kernels: Kernels | None = None):
        super().__init__()
        self.spec = spec
        self.range = layers
        self.is_first = layers.start == 0
        self.is_last = layers.end == spec.num_layers
        self.kernels = kernels or TorchKernels()
        self.layers = nn.ModuleList(DecoderLayer(spec) for _ in range(len(layers)))
        self.embed_tokens = (
            nn.Embedding(spec.vocab_size, spec.hidden_size) if self.is_first else None
        )
        if self.is_last:
            self.norm = nn.Parameter(torch.ones(spec.hidden_size))
            self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        self.rotary: RotaryTable | None = None
        self.compiled = None  # the compiled `_run_group` (`compile_decode`)
        self.compile_group = COMPILE_GROUP

    def compile_decode(self, group: int = COMPILE_GROUP) -> None:
        """Compile decode steps (torch.compile, inductor: C++ on CPU), `group` layers per
        graph. Every group runs the same code with its weights as inputs, so one graph
        serves all full groups and a one-layer graph the remainder; sizes are dynamic
        from the start (batch and context vary each step), so recompiles stay bounded.
        The C++ wrapper calls the kernels without Python in between: a decode step costs
        a few Python calls per group instead of ~60 eager ops per layer. Compiles
        lazily on first use."""
        if group < 1:
            raise ConfigError(f"compile group must be >= 1 layer (got {group})")
        self.compile_group = group
        # A copy of the function's code per model: dynamo keeps its graphs per code
        # object, up to 8 (recompile_limit), and models of other dtypes or weight kinds in
        # one process (the bench's variants, a node's shards) each need their own few.
        run = types.FunctionType(_run_group.__code__.replace(), _run_group.__globals__)
        self.compiled = torch.compile(
            run, dynamic=True, options={"cpp_wrapper": self.device_type() == "cpu"}
        )

    def device_type(self) -> str:
        return next(self.parameters()).device.type

    def setup_rotary(self, max_positions: int) -> None:
        p = next(self.parameters())
        self.rotary = RotaryTable(self.spec, max_positions, p.dtype, p.device)

    def forward(
        self,
        inputs: torch.Tensor,  # [T] token ids if first, else [T, hidden] hidden states
        positions: torch.Tensor,  # [T]
        kv: list[tuple[torch.Tensor, torch.Tensor]],  # per local layer (k_cache, v_cache)
        meta: AttentionMeta,
        logits_rows: torch.Tensor | None = None,  # rows to compute logits for (last shard)
        layers: LayerRange | None = None,  # a sub-range of self.range to run (default: all)
    ) -> torch.Tensor:
        layers = layers or self.range
        x = self.embed(inputs) if layers.start == 0 else inputs
        x = self.run_layers(x, positions, kv, meta, layers)
        if layers.end != self.spec.num_layers:
            return x
        return self.head(x, logits_rows)

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(token_ids)

    def run_layers(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        kv: list[tuple[torch.Tensor, torch.Tensor]],
        meta: AttentionMeta,
        layers: LayerRange,  # global layer indices, inside self.range
        compiled: bool = False,  # use the compiled layers (decode-only steps)
    ) -> torch.Tensor:
        if self.rotary is None:
            raise RuntimeError("call setup_rotary() before forward()")
        a, b = layers.start - self.range.start, layers.end - self.range.start
        cos, sin = self.rotary.lookup(positions, self.kernels.rotary_signed_sin)
        if compiled and self.compiled is not None:
            for lo, hi in _groups(a, b, self.compile_group):
                group = list(self.layers[lo:hi])
                x = self.compiled(group, kv[lo:hi], x, cos, sin, meta, self.kernels)
            return x
        return _run_group(list(self.layers[a:b]), kv[a:b], x, cos, sin, meta, self.kernels)

    def head(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (fp32) of `rows` of the final hidden states (all rows if None)."""
        if rows is not None:
            x = x[rows]
        x = self.kernels.rms_norm(x, self.norm, self.spec.rms_norm_eps)
        return self.lm_head(x).float()
