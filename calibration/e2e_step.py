"""End-to-end check: time one training step of a small DeepSeek-style MoE model.

Kernel tables say how fast each op runs alone; a training step adds launch
gaps, the optimizer, memory traffic between ops and everything the simulator
does not model. This script builds a scaled-down model with V3-shaped blocks —
multi-head latent attention (low-rank q and kv compression, decoupled RoPE
head dim, qk 192 / v 128 per head in the ``gpu`` preset), a first dense SwiGLU
layer, then MoE layers with a shared expert, sigmoid routing and top-k experts
run as a grouped GEMM over tokens sorted by expert — and times full training
steps (forward, cross-entropy loss, backward, AdamW update) with torch: CUDA
events on a GPU, perf_counter on the CPU; warm-up steps first, then the median.

It prints one JSON object: the measured step time and the configuration,
including the ``calibration_dims`` dict that :mod:`calibration.shapes` takes
and a one-GPU gpuhours ``scenario`` (``--scenario-out`` writes it to a file),
so that the simulator can predict the same configuration and be compared.

Usage::

    python -m calibration.e2e_step --preset gpu --scenario-out e2e.yaml   # on one GPU
    gpuhours predict e2e.yaml --profile MEASURED.json --json               # the prediction
    python -m calibration.e2e_step --preset tiny  # CPU smoke run (tests)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class E2EConfig:
    hidden: int
    heads: int
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    moe_intermediate: int
    n_routed_experts: int
    n_shared_experts: int
    experts_per_token: int
    dense_intermediate: int
    layers: int
    first_k_dense: int
    vocab: int
    seq_len: int
    batch: int
    dtype: str  # "bfloat16" or "float32"

    def calibration_dims(self) -> dict:
        """The dims dict of :mod:`calibration.shapes` for this model on one GPU (EP 1)."""
        keys = ("hidden", "heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                "v_head_dim", "moe_intermediate", "n_routed_experts", "experts_per_token", "dense_intermediate",
                "seq_len")
        d = {k: getattr(self, k) for k in keys}
        d.update(micro_batch_tokens=self.batch * self.seq_len, ep=1)
        return d


PRESETS = {
    # V3 per-head dims and ratios, narrower and shallower to fit one 80 GB GPU.
    "gpu": E2EConfig(hidden=2048, heads=16, q_lora_rank=768, kv_lora_rank=512, qk_nope_head_dim=128,
                     qk_rope_head_dim=64, v_head_dim=128, moe_intermediate=1024, n_routed_experts=16,
                     n_shared_experts=1, experts_per_token=4, dense_intermediate=5632, layers=4, first_k_dense=1,
                     vocab=32768, seq_len=4096, batch=1, dtype="bfloat16"),
    "tiny": E2EConfig(hidden=64, heads=2, q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16,
                      qk_rope_head_dim=8, v_head_dim=16, moe_intermediate=32, n_routed_experts=4,
                      n_shared_experts=1, experts_per_token=2, dense_intermediate=128, layers=2, first_k_dense=1,
                      vocab=128, seq_len=32, batch=2, dtype="float32"),
}


def scenario_dict(cfg: E2EConfig, cluster: str = "h100", name: str = "e2e-step") -> dict:
    """A gpuhours scenario for the same model on one GPU, so the simulator can predict this step."""
    model = {k: getattr(cfg, k) for k in (
        "layers", "hidden", "heads", "vocab", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
        "qk_rope_head_dim", "v_head_dim", "dense_intermediate", "n_routed_experts", "n_shared_experts",
        "experts_per_token", "moe_intermediate", "first_k_dense")}
    model.update(name=name + "-model", attention="mla", mlp="swiglu")
    note = "" if cfg.dtype == "bfloat16" else f" (measured in {cfg.dtype}; gpuhours models bf16)"
    return {
        "name": name,
        "description": "one training step of calibration/e2e_step.py's model on one GPU" + note,
        "model": model,
        "cluster": {"preset": cluster, "num_gpus": 1},
        # A BF16 model's gradients and AdamW moments are BF16 (torch makes them like the parameters). The loss
        # is F.cross_entropy over the logits cast to float32: an unfused chain, not a fused kernel (the
        # simulator's unfused chain is Megatron-Core's, which moves more bytes than torch's).
        "plan": {"tp": 1, "pp": 1, "ep": 1, "micro_batch": cfg.batch, "precision": "bf16", "loss_kernel": "unfused",
                 **({"moment_dtype": "bf16", "grad_dtype": "bf16"} if cfg.dtype == "bfloat16" else {})},
        "training": {"seq_len": cfg.seq_len, "global_batch": cfg.batch, "tokens": cfg.batch * cfg.seq_len},
    }


def grouped_mm_variant(device, dtype) -> str:
    """``torch._grouped_mm`` if it runs forward and backward here, else ``loop``."""
    import torch

    fn = getattr(torch, "_grouped_mm", None)
    if fn is None:
        return "loop"
    try:
        x = torch.randn(32, 16, device=device, dtype=dtype, requires_grad=True)
        w = torch.randn(2, 16, 16, device=device, dtype=dtype, requires_grad=True)
        offs = torch.tensor([13, 32], device=device, dtype=torch.int32)  # unaligned, as routing gives
        out = fn(x, w.transpose(-2, -1), offs=offs)
        out.float().sum().backward()
        ref = torch.cat([x[:13] @ w[0].t(), x[13:] @ w[1].t()])
        if not torch.allclose(out.float(), ref.float(), rtol=2e-2, atol=2e-2):
            return "loop"
    except Exception:  # not built for this device/dtype, or no backward
        return "loop"
    return "torch._grouped_mm"


def build_model(cfg: E2EConfig, device, grouped: str):
    """The model as an nn.Module (classes defined here so torch loads lazily)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    dtype = getattr(torch, cfg.dtype)

    class RMSNorm(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))

        def forward(self, x):
            xf = x.float()
            return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * self.weight

    def rope(x, cos, sin):  # x [B, S, H, R]: rotate the two halves
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    class MLA(nn.Module):
        def __init__(self):
            super().__init__()
            c = cfg
            self.qk = c.qk_nope_head_dim + c.qk_rope_head_dim
            if c.q_lora_rank:
                self.wq_a = nn.Linear(c.hidden, c.q_lora_rank, bias=False)
                self.q_norm = RMSNorm(c.q_lora_rank)
                self.wq_b = nn.Linear(c.q_lora_rank, c.heads * self.qk, bias=False)
            else:
                self.wq = nn.Linear(c.hidden, c.heads * self.qk, bias=False)
            self.wkv_a = nn.Linear(c.hidden, c.kv_lora_rank + c.qk_rope_head_dim, bias=False)
            self.kv_norm = RMSNorm(c.kv_lora_rank)
            self.wkv_b = nn.Linear(c.kv_lora_rank, c.heads * (c.qk_nope_head_dim + c.v_head_dim), bias=False)
            self.wo = nn.Linear(c.heads * c.v_head_dim, c.hidden, bias=False)

        def forward(self, x, cos, sin):
            c = cfg
            b, s, _ = x.shape
            q = self.wq_b(self.q_norm(self.wq_a(x))) if c.q_lora_rank else self.wq(x)
            q_nope, q_pe = q.view(b, s, c.heads, self.qk).split([c.qk_nope_head_dim, c.qk_rope_head_dim], -1)
            kv_c, k_pe = self.wkv_a(x).split([c.kv_lora_rank, c.qk_rope_head_dim], -1)
            k_pe = rope(k_pe.unsqueeze(2), cos, sin).expand(b, s, c.heads, c.qk_rope_head_dim)
            kv = self.wkv_b(self.kv_norm(kv_c)).view(b, s, c.heads, c.qk_nope_head_dim + c.v_head_dim)
            k_nope, v = kv.split([c.qk_nope_head_dim, c.v_head_dim], -1)
            q = torch.cat([q_nope, rope(q_pe, cos, sin)], -1).transpose(1, 2)
            k = torch.cat([k_nope, k_pe], -1).transpose(1, 2)
            o = F.scaled_dot_product_attention(q, k, v.transpose(1, 2), is_causal=True)
            return self.wo(o.transpose(1, 2).reshape(b, s, c.heads * c.v_head_dim))

    class SwiGLU(nn.Module):
        def __init__(self, inter):
            super().__init__()
            self.w13 = nn.Linear(cfg.hidden, 2 * inter, bias=False)
            self.w2 = nn.Linear(inter, cfg.hidden, bias=False)

        def forward(self, x):
            g, u = self.w13(x).chunk(2, -1)
            return self.w2(F.silu(g) * u)

    def grouped_linear(x, w, ends, sizes):
        if grouped == "torch._grouped_mm":
            return torch._grouped_mm(x, w.transpose(-2, -1), offs=ends)
        outs, start = [], 0
        for g, n in enumerate(sizes):
            outs.append(x[start:start + n] @ w[g].t())
            start += n
        return torch.cat(outs)

    class MoE(nn.Module):
        def __init__(self):
            super().__init__()
            c = cfg
            e, h, i = c.n_routed_experts, c.hidden, c.moe_intermediate
            self.gate = nn.Linear(h, e, bias=False)
            self.w13 = nn.Parameter(torch.randn(e, 2 * i, h) * h ** -0.5)
            self.w2 = nn.Parameter(torch.randn(e, h, i) * i ** -0.5)
            self.shared = SwiGLU(i * c.n_shared_experts) if c.n_shared_experts else None

        def forward(self, x):
            c = cfg
            b, s, h = x.shape
            xf = x.reshape(b * s, h)
            scores = torch.sigmoid(self.gate(xf).float())
            weights, experts = scores.topk(c.experts_per_token, dim=-1)
            weights = (weights / weights.sum(-1, keepdim=True)).to(x.dtype)
            flat = experts.flatten()
            order = torch.argsort(flat, stable=True)  # permute: tokens sorted by expert
            token = order // c.experts_per_token
            counts = torch.bincount(flat, minlength=c.n_routed_experts)
            ends = counts.cumsum(0).to(torch.int32)
            sizes = counts.tolist() if grouped == "loop" else None
            hidden = grouped_linear(xf[token], self.w13, ends, sizes)
            g, u = hidden.chunk(2, -1)
            out_sorted = grouped_linear(F.silu(g) * u, self.w2, ends, sizes)
            out_sorted = out_sorted * weights.flatten()[order].unsqueeze(-1)
            out = torch.zeros_like(xf).index_add(0, token, out_sorted)  # unpermute + weighted sum
            out = out.view(b, s, h)
            return out + self.shared(x) if self.shared is not None else out

    class Block(nn.Module):
        def __init__(self, dense: bool):
            super().__init__()
            self.attn_norm, self.attn = RMSNorm(cfg.hidden), MLA()
            self.ffn_norm = RMSNorm(cfg.hidden)
            self.ffn = SwiGLU(cfg.dense_intermediate) if dense else MoE()

        def forward(self, x, cos, sin):
            x = x + self.attn(self.attn_norm(x), cos, sin)
            return x + self.ffn(self.ffn_norm(x))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(cfg.vocab, cfg.hidden)
            self.blocks = nn.ModuleList(Block(i < cfg.first_k_dense) for i in range(cfg.layers))
            self.norm = RMSNorm(cfg.hidden)
            self.head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
            r = cfg.qk_rope_head_dim
            inv = 1.0 / (10000 ** (torch.arange(0, r // 2).float() / (r // 2)))
            ang = torch.outer(torch.arange(cfg.seq_len).float(), inv)  # [S, R/2]
            self.register_buffer("cos", ang.cos()[None, :, None, :], persistent=False)
            self.register_buffer("sin", ang.sin()[None, :, None, :], persistent=False)

        def forward(self, tokens):
            x = self.embed(tokens)
            cos, sin = self.cos.to(x.dtype), self.sin.to(x.dtype)
            for blk in self.blocks:
                x = blk(x, cos, sin)
            return self.head(self.norm(x))

    return Model().to(device=device, dtype=dtype)


def run_step_benchmark(cfg: E2EConfig, device=None, warmup: int = 2, steps: int = 5, seed: int = 0,
                       kernel_classes: bool = False, optimizer: str = "foreach", compile_model: bool = False) -> dict:
    """Build, warm up and time ``steps`` training steps; return the JSON-able report (with
    ``kernel_classes``, also the GPU kernel time by class: :func:`kernel_breakdown`)."""
    import torch
    import torch.nn.functional as F

    from calibration.timing import TimingConfig, time_fn

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    dtype = getattr(torch, cfg.dtype)
    grouped = grouped_mm_variant(device, dtype)
    model = build_model(cfg, device, grouped)
    forward = torch.compile(model) if compile_model else model  # fuses the elementwise chains, fewer launches
    # fused: one kernel pass over each parameter group, as training frameworks run Adam (Megatron's and
    # DeepSpeed's fused Adam) and as the simulator prices it; foreach: torch's default, several passes.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if optimizer == "fused" else {}))
    g = torch.Generator().manual_seed(seed + 1)
    batches = [torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq_len + 1), generator=g).to(device) for _ in range(2)]
    losses: list[float] = []

    def step(tokens):
        logits = forward(tokens[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, cfg.vocab), tokens[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())

    timing = time_fn(step, batches, device, TimingConfig(warmup=warmup, min_reps=steps, max_reps=steps))
    last = [float(x) for x in losses[-steps:]]  # the timed steps' losses, before any profiled ones
    kernels = None
    if kernel_classes and device.type == "cuda":
        try:
            kernels = kernel_breakdown(step, batches)
        except Exception as e:  # the profiler's event API differs between torch builds: report, keep the timing
            kernels = {"error": f"{type(e).__name__}: {e}"[:300]}
    if not all(torch.isfinite(torch.tensor(last))):
        raise RuntimeError(f"e2e_step: non-finite loss {last}")
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "measured_step_ms": timing.median_ms,
        "step_ms_min": timing.min_ms,
        "step_ms_max": timing.max_ms,
        "steps_timed": timing.reps,
        "timing": timing.method,
        "tokens_per_step": cfg.batch * cfg.seq_len,
        "params": n_params,
        "loss_last": last[-1],
        "config": asdict(cfg),
        "calibration_dims": cfg.calibration_dims(),
        "scenario": scenario_dict(cfg),
        "grouped_gemm": grouped,
        "optimizer": f"torch.optim.AdamW ({optimizer})",
        "compiled": compile_model,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        **({"kernels": kernels} if kernels else {}),
    }


# Kernel classes of the simulator's step breakdown (simulator.breakdown), matched on CUDA kernel names
# (first match wins; lower case). GEMM libraries: cuBLAS (gemm, nvjet, xmma, cutlass), torch's grouped
# GEMM (cutlass); attention: FlashAttention (flash, fmha) and cuDNN's SDPA (cudnn); AdamW's foreach
# kernels (multi_tensor_apply). Everything else is an element-wise, reduction, copy, index or sort
# kernel: memory-bound work in the simulator's terms.
KERNEL_CLASSES = (
    ("attention", ("flash", "fmha", "cudnn", "attention")),
    ("optimizer", ("multi_tensor_apply", "adam")),
    ("gemm", ("gemm", "nvjet", "xmma", "cutlass", "wgmma", "gmma", "cublas")),
)


def kernel_class(name: str) -> str:
    low = name.lower()
    for cls, keys in KERNEL_CLASSES:
        if any(k in low for k in keys):
            return cls
    return "memory_bound"


def kernel_breakdown(step, inputs, steps: int = 3) -> dict:
    """GPU kernel time of ``steps`` training steps by class, from torch.profiler (CUDA only).

    Returns per-step milliseconds by class, the kernel count, and the step's wall time on the GPU
    stream (first kernel start to last kernel end), so that ``gaps_ms`` = wall - busy is the time
    the GPU waited for the host (launch overhead, synchronisations such as ``.tolist()``)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(steps):
            step(inputs[i % len(inputs)])
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA" and e.time_range.elapsed_us() > 0
               and not e.name.startswith(("Memcpy", "Memset"))]
    if not kernels:
        return {"error": "torch.profiler recorded no CUDA kernels"}
    by: dict[str, float] = {}
    top: dict[str, float] = {}
    for e in kernels:
        us = e.time_range.elapsed_us()
        cls = kernel_class(e.name)
        by[cls] = by.get(cls, 0.0) + us
        top[e.name[:90]] = top.get(e.name[:90], 0.0) + us
    start = min(e.time_range.start for e in kernels)
    end = max(e.time_range.end for e in kernels)
    busy = sum(by.values())
    per = 1e-3 / steps  # us over all steps -> ms per step
    return {
        "ms_per_step": {k: round(v * per, 3) for k, v in sorted(by.items())},
        "busy_ms": round(busy * per, 3),
        "stream_ms": round((end - start) * per, 3),
        "gaps_ms": round((end - start - busy) * per, 3),
        "kernels_per_step": len(kernels) // steps,
        "top_kernels_ms": {k: round(v * per, 3) for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:25]},
        "steps": steps,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calibration.e2e_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpu")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--scenario-out", default=None, metavar="PATH.yaml",
                        help="also write the matching one-GPU scenario for `gpuhours predict`")
    parser.add_argument("--optimizer", choices=("foreach", "fused"), default="foreach",
                        help="AdamW implementation: torch's default (foreach) or fused=True")
    parser.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    parser.add_argument("--kernels", action="store_true",
                        help="also profile 3 steps (torch.profiler) and report GPU kernel time by class")
    args = parser.parse_args(argv)
    cfg = PRESETS[args.preset]
    overrides = {k: v for k, v in (("layers", args.layers), ("seq_len", args.seq_len), ("batch", args.batch)) if v}
    cfg = replace(cfg, **overrides)
    report = run_step_benchmark(cfg, device=args.device, warmup=args.warmup, steps=args.steps,
                                kernel_classes=args.kernels, optimizer=args.optimizer, compile_model=args.compile)
    if args.scenario_out:
        with open(args.scenario_out, "w") as f:  # JSON is valid YAML: gpuhours predict reads it
            json.dump(report["scenario"], f, indent=1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
