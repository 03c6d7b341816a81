"""Which shapes to measure: the ones a scenario really uses, plus sweeps around them.

A calibration profile is a table the simulator interpolates in log space and
clamps outside of, so it must (1) contain the exact shapes the scenario runs
and (2) bracket them with powers of two, so that nearby shapes (another
micro-batch, another expert count) interpolate instead of clamping.

The shapes follow from a plain dict of model dimensions (see ``V3_DIMS``):

* dense GEMMs (M = tokens per micro-batch): MLA projections (fused q/kv down,
  q up, kv up, output), the dense MLP and the shared expert, the router; and for
  each, the backward data-gradient (M, K, N) and weight-gradient (N, K, M) GEMMs;
* grouped GEMMs: ``n_routed_experts / ep`` experts per GPU, each receiving
  ``micro_batch_tokens * ep * experts_per_token / n_routed_experts`` tokens on
  a balanced micro-batch (V3: 4 experts x 8192 tokens), up and down
  projections, forward and data-gradient;
* MLA attention: heads, qk dim ``nope + rope`` (192), v dim (128), causal;
* memory-bound ops with their sizes.

This module is pure Python (no torch): the lead's scenario code turns a
scenario into the dims dict; :func:`shapes_from_scenario` calls it.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

DIM_KEYS = (
    "hidden", "heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
    "v_head_dim", "moe_intermediate", "n_routed_experts", "experts_per_token",
    "dense_intermediate", "seq_len", "micro_batch_tokens", "ep",
)

# DeepSeek-V3 on 2048 H800s: EP64, 4096-token micro-batches -> 4 experts/GPU x 8192 tokens.
V3_DIMS: Mapping[str, int] = {
    "hidden": 7168, "heads": 128, "q_lora_rank": 1536, "kv_lora_rank": 512,
    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "moe_intermediate": 2048, "n_routed_experts": 256, "experts_per_token": 8,
    "dense_intermediate": 18432, "seq_len": 4096, "micro_batch_tokens": 4096, "ep": 64,
}

# Tiny dims for the CPU harness: every FP8 shape stays a multiple of 128.
TINY_DIMS: Mapping[str, int] = {
    "hidden": 256, "heads": 4, "q_lora_rank": 128, "kv_lora_rank": 128,
    "qk_nope_head_dim": 32, "qk_rope_head_dim": 32, "v_head_dim": 32,
    "moe_intermediate": 128, "n_routed_experts": 8, "experts_per_token": 2,
    "dense_intermediate": 256, "seq_len": 64, "micro_batch_tokens": 128, "ep": 2,
}

PRESETS: Mapping[str, Mapping[str, int]] = {"v3": V3_DIMS, "deepseek-v3": V3_DIMS, "tiny": TINY_DIMS}

MEMORY_OPS = ("norm", "residual", "act", "quant", "quant_t", "fp8_quant_transpose", "permute", "unpermute", "*")
QUANT_OPS = ("quant", "quant_t", "fp8_quant_transpose")  # sizes kept multiples of 128


@dataclass(frozen=True)
class GemmShape:
    m: int
    n: int
    k: int
    role: str = ""


@dataclass(frozen=True)
class GroupedShape:
    groups: int
    m_per_group: int
    n: int
    k: int
    role: str = ""
    skews: tuple[str, ...] = ()  # extra token skews measured besides balanced, e.g. ("zipf1.0",)


@dataclass(frozen=True)
class AttentionShape:
    batch: int
    seq: int
    heads: int
    qk_dim: int
    v_dim: int
    causal: bool = True


@dataclass(frozen=True)
class MemoryShape:
    """A memory-bound op on an [m, n] tensor; ``k`` is top-k for permute/unpermute."""

    op: str
    m: int
    n: int
    k: int = 1


@dataclass(frozen=True)
class ShapePlan:
    dims: Mapping[str, int]
    gemm: tuple[GemmShape, ...]
    grouped: tuple[GroupedShape, ...]
    attention: tuple[AttentionShape, ...]
    memory: tuple[MemoryShape, ...]
    sm_gemm: GemmShape
    sm_fractions: tuple[float, ...] = (1.0, 0.85, 0.75, 0.5, 0.25)
    collective_bytes: tuple[int, ...] = field(default=tuple(1 << p for p in range(20, 29, 2)))
    dtypes: tuple[str, ...] = ("bf16", "fp8")  # GEMM and grouped GEMM precisions to measure

    def counts(self) -> dict[str, int]:
        return {"gemm": len(self.gemm), "grouped_gemm": len(self.grouped),
                "attention": len(self.attention), "memory_bound": len(self.memory)}


class ShapeError(ValueError):
    """A dims dict that lacks a key or has a non-positive value."""


def validate_dims(dims: Mapping[str, Any]) -> dict[str, int]:
    """Return a clean dims dict; raise ShapeError naming a missing or bad key."""
    out: dict[str, int] = {}
    for key in DIM_KEYS:
        if key not in dims:
            raise ShapeError(f"shapes: dims lack {key!r}; needed: {', '.join(DIM_KEYS)}")
        value = dims[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or int(value) != value:
            raise ShapeError(f"shapes: {key} must be an integer, got {value!r}")
        if value < 0 or (value == 0 and key != "q_lora_rank"):
            raise ShapeError(f"shapes: {key} must be positive, got {value!r}")
        out[key] = int(value)
    return out


def _pow2_floor(x: int) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(1, x)))))


def _pow2_ceil(x: int) -> int:
    return 1 << max(0, int(math.ceil(math.log2(max(1, x)))))


def bracket(x: int, below: int, above: int, minimum: int = 1, step: int = 1) -> list[int]:
    """x itself, plus powers of two: ``below`` steps under floor2(x), ``above`` over ceil2(x).

    ``step`` is the exponent stride (2: factors of 4).
    """
    lo, hi = _pow2_floor(x), _pow2_ceil(x)
    vals = {x, lo, hi}
    vals.update(lo >> (i * step) for i in range(1, below + 1))
    vals.update(hi << (i * step) for i in range(1, above + 1))
    return sorted(v for v in vals if v >= minimum)


def experts_per_gpu(d: Mapping[str, int]) -> int:
    return max(1, d["n_routed_experts"] // d["ep"])


def tokens_per_expert(d: Mapping[str, int]) -> int:
    """Balanced routing: every expert gets the same share of all token-expert pairs."""
    ep_ranks = min(d["ep"], d["n_routed_experts"])
    return max(1, d["micro_batch_tokens"] * ep_ranks * d["experts_per_token"] // d["n_routed_experts"])


def forward_gemms(d: Mapping[str, int]) -> list[GemmShape]:
    t, h = d["micro_batch_tokens"], d["hidden"]
    qk = d["qk_nope_head_dim"] + d["qk_rope_head_dim"]
    heads = d["heads"]
    shapes = []
    if d["q_lora_rank"]:
        shapes.append(GemmShape(t, d["q_lora_rank"] + d["kv_lora_rank"] + d["qk_rope_head_dim"], h, "attn.qkv_down"))
        shapes.append(GemmShape(t, heads * qk, d["q_lora_rank"], "attn.q_up"))
    else:
        shapes.append(GemmShape(t, heads * qk, h, "attn.q_proj"))
        shapes.append(GemmShape(t, d["kv_lora_rank"] + d["qk_rope_head_dim"], h, "attn.kv_down"))
    shapes += [
        GemmShape(t, heads * (d["qk_nope_head_dim"] + d["v_head_dim"]), d["kv_lora_rank"], "attn.kv_up"),
        GemmShape(t, h, heads * d["v_head_dim"], "attn.o_proj"),
        GemmShape(t, 2 * d["dense_intermediate"], h, "mlp.dense_up"),
        GemmShape(t, h, d["dense_intermediate"], "mlp.dense_down"),
        GemmShape(t, 2 * d["moe_intermediate"], h, "moe.shared_up"),
        GemmShape(t, h, d["moe_intermediate"], "moe.shared_down"),
        GemmShape(t, d["n_routed_experts"], h, "moe.router"),
    ]
    return shapes


def scenario_gemms(d: Mapping[str, int], backward: bool = True) -> list[GemmShape]:
    """Forward GEMMs and, with ``backward``, their data- and weight-gradient GEMMs."""
    out = []
    for s in forward_gemms(d):
        out.append(s)
        if backward:
            out.append(GemmShape(s.m, s.k, s.n, s.role + ".dgrad"))
            out.append(GemmShape(s.n, s.k, s.m, s.role + ".wgrad"))
    return _dedupe(out, key=lambda s: (s.m, s.n, s.k))


def scenario_grouped(d: Mapping[str, int], backward: bool = True) -> list[GroupedShape]:
    g, m, h, i = experts_per_gpu(d), tokens_per_expert(d), d["hidden"], d["moe_intermediate"]
    out = [GroupedShape(g, m, 2 * i, h, "moe.expert_up"), GroupedShape(g, m, h, i, "moe.expert_down")]
    if backward:
        out += [GroupedShape(g, m, h, 2 * i, "moe.expert_up.dgrad"), GroupedShape(g, m, i, h, "moe.expert_down.dgrad")]
    return out


def scenario_attention(d: Mapping[str, int]) -> AttentionShape:
    return AttentionShape(
        batch=max(1, d["micro_batch_tokens"] // d["seq_len"]), seq=d["seq_len"], heads=d["heads"],
        qk_dim=d["qk_nope_head_dim"] + d["qk_rope_head_dim"], v_dim=d["v_head_dim"], causal=True,
    )


def scenario_memory(d: Mapping[str, int]) -> list[MemoryShape]:
    t, h = d["micro_batch_tokens"], d["hidden"]
    routed = experts_per_gpu(d) * tokens_per_expert(d)
    k = d["experts_per_token"]
    return [
        MemoryShape("norm", t, h),
        MemoryShape("residual", t, h),
        MemoryShape("act", routed, d["moe_intermediate"]),
        MemoryShape("act", t, d["dense_intermediate"]),
        MemoryShape("quant", t, h),
        MemoryShape("quant", routed, d["moe_intermediate"]),
        MemoryShape("quant_t", t, h),
        MemoryShape("quant_t", routed, d["moe_intermediate"]),
        MemoryShape("fp8_quant_transpose", t, h),
        MemoryShape("fp8_quant_transpose", routed, d["moe_intermediate"]),
        MemoryShape("permute", t, h, k),
        MemoryShape("unpermute", t, h, k),
        MemoryShape("*", t * k, h),  # plain device copy: the generic memory-bound row
    ]


def _gemm_key(s: GemmShape) -> tuple:
    return (s.m, s.n, s.k)


def _grouped_key(s: GroupedShape) -> tuple:
    return (s.groups, s.m_per_group, s.n, s.k)


def _attention_key(s: AttentionShape) -> tuple:
    return (s.batch, s.seq, s.heads, s.qk_dim, s.v_dim)


def _dedupe(items, key):
    seen, out = set(), []
    for it in items:
        kk = key(it)
        if kk not in seen:
            seen.add(kk)
            out.append(it)
    return out


def sweep_plan(dims: Mapping[str, Any], quick: bool = False, backward: bool = True, m_step: int = 1) -> ShapePlan:
    """The scenario's shapes plus power-of-two sweeps around them.

    Dense GEMMs: M over powers of two around each shape's M (full: two below,
    one above; quick: one each side), and in the full sweep also N and K at the
    powers of two bracketing them. Grouped GEMMs: tokens per expert likewise,
    and in the full sweep expert counts G/2 and 2G; Zipf skew is measured on
    the scenario's own grouped shapes. Attention: sequence lengths around the
    scenario's. Memory-bound ops: sizes from 1/8 to 2x.
    """
    d = validate_dims(dims)
    below, above = (1, 1) if quick else (2, 1)
    gemms: list[GemmShape] = []
    for s in scenario_gemms(d, backward=backward):
        gemms.append(s)
        for m in bracket(s.m, below, above, minimum=16, step=m_step):
            gemms.append(GemmShape(m, s.n, s.k, s.role + ".sweep"))
        if not quick:
            for n in bracket(s.n, 0, 0, minimum=16):
                for k in bracket(s.k, 0, 0, minimum=16):
                    gemms.append(GemmShape(s.m, n, k, s.role + ".sweep"))
    gemms = _dedupe(gemms, key=_gemm_key)

    grouped: list[GroupedShape] = []
    for s in scenario_grouped(d, backward=backward):
        grouped.append(GroupedShape(s.groups, s.m_per_group, s.n, s.k, s.role, ("zipf1.0",)))
        group_counts = [s.groups] if quick else sorted({max(1, s.groups // 2), s.groups, 2 * s.groups})
        for g in group_counts:
            for m in bracket(s.m_per_group, below, above, minimum=16):
                grouped.append(GroupedShape(g, m, s.n, s.k, s.role + ".sweep"))
    grouped = _dedupe(grouped, key=_grouped_key)

    a = scenario_attention(d)
    seqs = bracket(a.seq, below, 0 if quick else 1, minimum=32)
    attention = [AttentionShape(max(1, d["micro_batch_tokens"] // s), s, a.heads, a.qk_dim, a.v_dim) for s in seqs]
    if not quick and a.heads >= 2:
        attention.append(AttentionShape(a.batch, a.seq, a.heads // 2, a.qk_dim, a.v_dim))
    attention = _dedupe(attention, key=_attention_key)

    memory: list[MemoryShape] = []
    factors = (0.25, 1.0, 2.0) if quick else (0.125, 0.5, 1.0, 2.0)
    for s in scenario_memory(d):
        for f in factors:
            m = max(128, int(round(s.m * f / 128)) * 128) if s.op in QUANT_OPS else max(1, int(s.m * f))
            memory.append(MemoryShape(s.op, m, s.n, s.k))
    memory = _dedupe(memory, key=lambda s: (s.op, s.m, s.n, s.k))

    fwd = forward_gemms(d)
    sm_gemm = max(fwd, key=lambda s: s.m * s.n * s.k)
    return ShapePlan(d, tuple(gemms), tuple(grouped), tuple(attention), tuple(memory), sm_gemm)


def plan_from_ops(ops, tokens: int, quick: bool = True) -> ShapePlan:
    """The shapes the op timer will look up for these ops (``simulator.workload.Op``), plus sweeps.

    For a model the dims dict cannot describe (a dense GPT or Llama with MHA or GQA, no MLA dims),
    the simulator's own op list says what to measure: every GEMM (M, N, K) per GPU, every grouped
    GEMM (experts, tokens per expert, N, K) and every attention core (sequence, heads per GPU, qk
    and v head dims), each as the workload builds it for the scenario's plan (TP splits, sequence
    parallelism, micro-batch), in the precisions its GEMMs run in. Sweeps bracket M (tokens per expert, sequence length) as
    :func:`sweep_plan` does. Memory-bound ops are not derived here: their table is read by bytes
    moved and a profile's existing rows are kept by ``--update``.
    """
    below, above = (1, 1) if quick else (2, 1)
    gemms: list[GemmShape] = []
    grouped: list[GroupedShape] = []
    attention: list[AttentionShape] = []
    dtypes = {op.dtype for op in ops if op.kind in ("gemm", "grouped_gemm")}
    for op in ops:
        if op.kind == "gemm" and op.m >= 1 and op.n >= 1 and op.k >= 1:
            m, n, k = int(round(op.m)), int(round(op.n)), int(round(op.k))
            gemms.append(GemmShape(m, n, k, op.name))
            gemms += [GemmShape(mm, n, k, op.name + ".sweep") for mm in bracket(m, below, above, minimum=16)]
        elif op.kind == "grouped_gemm" and op.groups and op.m >= 1:
            m = int(round(op.m))
            grouped.append(GroupedShape(int(op.groups), m, int(op.n), int(op.k), op.name, ("zipf1.0",)))
            grouped += [GroupedShape(int(op.groups), mm, int(op.n), int(op.k), op.name + ".sweep")
                        for mm in bracket(m, below, above, minimum=16)]
        elif op.kind == "attention" and op.seq and op.heads:
            # ``tokens`` per micro-batch on this GPU: at each swept length the batch holds as many (as
            # sweep_plan does), so the kernel fills the GPU as the scenario's does.
            for seq in bracket(int(op.seq), below, 0 if quick else 1, minimum=32):
                attention.append(AttentionShape(max(1, tokens // seq), seq, int(op.heads), int(op.qk_dim),
                                                int(op.v_dim)))
    gemms = _dedupe(gemms, key=_gemm_key)
    if not gemms:
        raise ShapeError("shapes: the scenario's ops hold no GEMM to measure")
    grouped = _dedupe(grouped, key=_grouped_key)
    attention = _dedupe(attention, key=_attention_key)
    sm_gemm = max(gemms, key=lambda s: s.m * s.n * s.k)
    measured = tuple(dt for dt in ("bf16", "fp8") if dt in dtypes or (dt == "bf16" and "fp16" in dtypes))
    return ShapePlan({}, tuple(gemms), tuple(grouped), tuple(attention), (), sm_gemm, dtypes=measured or ("bf16",))


def scenario_ops(scenario: Any) -> tuple[list, int]:
    """(every op of one micro-batch through each kind of layer the scenario's model has, per GPU; the
    micro-batch's tokens on that GPU)."""
    from simulator.workload import Shape, layer_ops, model_units

    shape = Shape.of(scenario.plan, scenario.training.seq_len)
    ops = []
    for kind in dict.fromkeys(model_units(scenario.model)):
        ops += layer_ops(scenario.model, kind, shape, scenario.cluster.gpus_per_node).all_ops()
    return ops, shape.tokens


# --------------------------------------------------------------------------- scenario input


def _warn(msg: str) -> None:
    print(f"gpuhours calibrate: warning: {msg}", file=sys.stderr)


def _dims_from_mapping(data: Mapping[str, Any], where: str) -> dict[str, int]:
    """A dims dict from a mapping with (some of) the keys; missing keys come from V3."""
    if "calibration_dims" in data and isinstance(data["calibration_dims"], Mapping):
        data = data["calibration_dims"]
    missing = [k for k in DIM_KEYS if k not in data]
    if len(missing) == len(DIM_KEYS):
        raise ShapeError(f"shapes: {where} has none of the model dims ({', '.join(DIM_KEYS)})")
    if missing:
        _warn(f"{where} lacks {', '.join(missing)}; using DeepSeek-V3 values for those")
    merged = {k: data.get(k, V3_DIMS[k]) for k in DIM_KEYS}
    return validate_dims(merged)


def dims_from_scenario(scenario: Any) -> dict[str, int]:
    """Turn whatever ``simulator.scenario.load_scenario`` returns into a dims dict.

    Accepts an object with ``calibration_dims()`` (preferred), a
    ``simulator.config.Scenario`` (model, plan, training: per-GPU heads and
    dense intermediate under TP; tokens per micro-batch = micro_batch x
    seq_len / cp), or a mapping with the keys (possibly under
    ``calibration_dims``).
    """
    if hasattr(scenario, "calibration_dims"):
        return validate_dims(scenario.calibration_dims())
    model, plan, training = (getattr(scenario, a, None) for a in ("model", "plan", "training"))
    if model is not None and plan is not None and training is not None:
        # simulator.config.Scenario: per-GPU shapes (TP splits heads and intermediates).
        tp = max(1, int(getattr(plan, "tp", 1)))
        seq = int(training.seq_len)
        dims = {k: getattr(model, k) for k in DIM_KEYS if hasattr(model, k)}
        dims.update(
            heads=max(1, model.heads // tp),
            dense_intermediate=max(1, (model.dense_intermediate or model.moe_intermediate) // tp),
            seq_len=seq,
            micro_batch_tokens=int(plan.micro_batch) * seq // max(1, int(getattr(plan, "cp", 1))),
            ep=int(plan.ep),
        )
        return validate_dims(dims)
    if isinstance(scenario, Mapping):
        return _dims_from_mapping(scenario, "scenario")
    raise ShapeError(
        f"shapes: cannot take model dims from a {type(scenario).__name__}; "
        "give it a calibration_dims() method returning the dims dict"
    )


def _load_file(path: Path) -> Any:
    text = path.read_text()
    if path.suffix == ".json":
        return json.loads(text)
    import yaml  # PyYAML, a dependency of the project's scenario files

    return yaml.safe_load(text)


def shapes_from_scenario(name_or_path: str | None) -> dict[str, int]:
    """Model dims for ``--shapes``: a preset (v3, tiny), a scenario, or a YAML/JSON of dims.

    Scenarios are read through ``simulator.scenario.load_scenario``. Where that
    is not available (or cannot read the argument), a YAML/JSON file holding the
    dims at top level is read directly (a model YAML such as
    ``scenarios/models/deepseek-v3.yaml`` has most of them; the rest come from
    V3 with a warning); failing that, the V3 defaults are used with a warning.
    """
    if name_or_path is None or str(name_or_path).lower() in PRESETS:
        return dict(PRESETS[str(name_or_path or "v3").lower()])
    try:
        from simulator.scenario import load_scenario
    except ImportError as e:
        load_scenario = None
        reason = f"simulator.scenario is not available ({e})"
    if load_scenario is not None:
        try:
            return dims_from_scenario(load_scenario(name_or_path))
        except Exception as e:  # the scenario loader refuses a plain dims file; read it below
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        try:
            data = _load_file(path)
        except (OSError, ValueError, yaml_error()) as e:
            raise ShapeError(f"--shapes: {path} cannot be read ({str(e).splitlines()[0]})") from None
        if not isinstance(data, Mapping):
            raise ShapeError(f"--shapes: {path} holds no mapping of model dims ({', '.join(DIM_KEYS)})")
        return _dims_from_mapping(data, str(path))
    # A bad --shapes is refused, never replaced by other shapes: a sweep over the wrong model
    # wastes the GPU time it was meant to save.
    raise ShapeError(f"--shapes: {name_or_path!r} is neither a preset ({', '.join(sorted(PRESETS))}), a scenario "
                     f"(see `gpuhours scenarios`) nor a YAML/JSON file of model dims ({reason})")


def yaml_error() -> type[Exception]:
    """PyYAML's base error class (imported lazily, like PyYAML itself)."""
    import yaml

    return yaml.YAMLError


def plan_for(name_or_path: str | None, quick: bool = False, backward: bool = True,
             m_step: int = 1) -> tuple[dict[str, int] | None, ShapePlan, str]:
    """(dims or None, the shapes to measure, where they came from) for ``--shapes``.

    A scenario (a preset name or a file) is measured at the shapes its ops will be looked up at
    (:func:`plan_from_ops`), in the precisions its GEMMs run in: the op timer then reads measured rows,
    not a fill between distant ones. Where its model also has MLA dims, the dims sweep
    (:func:`sweep_plan`: N/K and expert-count sweeps, memory-bound ops) is added. A dims preset
    (``v3``, ``tiny``) or a dims file takes the dims sweep alone; a scenario without MLA dims (MHA or
    GQA attention) the ops alone. A file that looks like a scenario (``model`` and ``plan``) but does
    not load is refused with the loader's reason.
    """
    try:
        dims = shapes_from_scenario(name_or_path)
    except ShapeError as e:
        dims, refused = None, e
    sc = _scenario_or_none(name_or_path)
    if sc is None:
        if dims is None:
            raise refused
        return dims, sweep_plan(dims, quick=quick, backward=backward, m_step=m_step), "model dims"
    ops, tokens = scenario_ops(sc)
    own = plan_from_ops(ops, tokens, quick=quick)
    if dims is None:
        return None, own, "the simulator's ops for " + str(name_or_path)
    swept = sweep_plan(dims, quick=quick, backward=backward, m_step=m_step)
    both = ShapePlan(
        dims,
        tuple(_dedupe(own.gemm + swept.gemm, key=_gemm_key)),
        tuple(_dedupe(own.grouped + swept.grouped, key=_grouped_key)),
        tuple(_dedupe(own.attention + swept.attention, key=_attention_key)),
        swept.memory, swept.sm_gemm, swept.sm_fractions, swept.collective_bytes, own.dtypes)
    return dims, both, "the simulator's ops and model dims for " + str(name_or_path)


def _scenario_or_none(name_or_path: str | None):
    """The scenario ``--shapes`` names, or None where it names none (a dims preset or a dims file).

    A file with ``model`` and ``plan`` sections is meant as a scenario: if it does not load, say why
    (a ShapeError with the loader's first line) rather than read it as dims."""
    if name_or_path is None or str(name_or_path).lower() in PRESETS.keys() - {"deepseek-v3"}:
        return None
    try:
        from simulator.scenario import load_scenario

        return load_scenario(name_or_path)
    except Exception as e:  # noqa: BLE001 - any refusal: a dims file, or a scenario to report
        path = Path(str(name_or_path))
        try:
            data = _load_file(path) if path.suffix in (".yaml", ".yml", ".json") and path.is_file() else None
        except Exception:  # unreadable: shapes_from_scenario has said why
            data = None
        if isinstance(data, Mapping) and "model" in data and "plan" in data:
            raise ShapeError(f"--shapes: {path} is a scenario that does not load: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        return None
