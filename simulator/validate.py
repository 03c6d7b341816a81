"""Reproduce published training runs: ``gpuhours validate``.

Each row of a validation CSV (schema in ``../shared/validation/README.md``)
becomes a scenario: its model, GPU, plan and batch are read column by column;
fields the source did not state fall back to documented defaults (micro-batch
1, no recompute, the fewest virtual stages Megatron-LM accepts for an unstated
interleaved schedule) and are listed per row; a layout the source describes in
words (Llama 3's one-block chunks) is read from it, not defaulted. The prediction is compared with the measured tokens/s/GPU
or, where the source printed only MFU (Llama 3), with MFU recomputed under the
row's own FLOP convention (``mfu_definition``).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .config import to_dict
from .errors import ConfigError, special_file
from .scenario import ROOT, scenario_from_dict
from .workload import param_counts

DEFAULT_CSV = ROOT / "tests" / "data" / "public.csv"
GPU_PRESETS = {"H100-SXM-80GB": "h100", "A100-80GB": "a100", "H800": "h800", "H200": "h200"}
REQUIRED = ("run_id", "include", "layers", "hidden", "heads", "vocab", "seq_len", "global_batch_seqs", "gpu")


@dataclass
class RowResult:
    run_id: str
    metric: str
    predicted: float | None
    measured: float | None
    error_pct: float | None
    reason: str = ""
    defaults: list[str] = field(default_factory=list)
    memory_note: str = ""  # set when the modelled plan does not fit in HBM (a default may be wrong)
    profile_note: str = ""  # set when the given profile was measured on another device than the row's GPUs
    step_parts_s: dict = field(default_factory=dict)  # where the predicted step goes (simulator.breakdown)


# Source blocks whose runs predate FlashAttention (Dao et al., arXiv 2205.14135, May 2022): their
# framework materialized the s x s attention scores (Megatron-LM's fused scale-mask-softmax between
# two batched GEMMs). NAR21 is SC21 (arXiv 2104.04473, April 2021).
UNFUSED_ATTENTION_BLOCKS = {"NAR21"}

# Source blocks whose framework reduced gradients only after the whole pipeline: Megatron-LM's 2021
# local DDP (the default --DDP-impl local) all-reduced its contiguous gradient buffer from train_step
# once forward_backward_func returned; overlapping it with backward (--overlap-grad-reduce) came in 2023.
LOCAL_DDP_BLOCKS = {"NAR21"}

# Source blocks run with Megatron-LM's own GPT scripts, which leave --attention-dropout and
# --hidden-dropout at their defaults of 0.1 (megatron/arguments.py, _add_regularization_args) unless a
# script sets them; the CSV has no dropout column, so these rows take the framework default (the
# validation README, item 5). MB2511 recipes follow the HuggingFace configs (dropout 0), as do the
# Llama 3 and DeepSeek runs.
MEGATRON_DROPOUT_BLOCKS = {"NAR21", "MLM24"}

# Source blocks run with Megatron-LM's own scripts, whose loss is the unfused VocabParallelCrossEntropy:
# NAR21 predates any fused variant, and Megatron-LM's --cross-entropy-loss-fusion defaults to off (the
# MLM24 README lists the overlap flags it turned on, not this one). Megatron-Bridge recipes set
# cross_entropy_loss_fusion=True with Transformer Engine's kernels (the default, plan.loss_kernel=fused).
UNFUSED_LOSS_BLOCKS = {"NAR21", "MLM24"}

# Source blocks whose MoE runs used Megatron-Core's all-to-all token dispatcher (one NCCL all-to-all
# of one row per (token, expert) pair, BF16): Megatron-Bridge's model providers default
# moe_token_dispatcher_type to "alltoall" (Qwen3MoEModelProvider in models/qwen/qwen_provider.py,
# GPTOSSProvider), and the H100 Qwen3-235B perf config sets it explicitly
# (scripts/performance/configs/qwen/qwen3_llm_pretrain.py).
# MB2509 (the 25.09 release's table, in tests/data/supplementary.csv) ran the same providers. DeepSeek's
# provider was not checked: its MLA rows keep the default (deepep) and say so. MBPR rows (measurements
# posted in Megatron-Bridge pull requests, supplementary set) name their dispatcher in the notes instead.
ALLTOALL_DISPATCHER_BLOCKS = {"MB2511", "MB2509"}
MEGATRON_DEFAULT_DROPOUT = 0.1

# Source blocks whose core attention ran through Transformer Engine's DotProductAttention: Megatron-LM's
# --tp-comm-overlap (on in MLM24) needs TE layers, and Megatron-Bridge builds its models from them. On
# Hopper TE picks cuDNN's fused attention over FlashAttention when both can run the shape ("Disabling
# FlashAttention to give FusedAttention preference on Hopper+ for performance reasons",
# transformer_engine/pytorch/attention/dot_product_attention/utils.py, get_attention_backend).
# MLMR26 (Megatron-LM's examples/moe_recipes, supplementary set) sets NVTE_FUSED_ATTN=1 with TE layers.
TE_ATTENTION_BLOCKS = {"MLM24", "MB2511", "MB2509", "MBPR", "MLMR26"}

# DeepSeek's own runs (HAI-LLM framework), whose MLA kernel was "optimized based on an improved version of
# FlashAttention-2" (DeepSeek-V2 report sec 3.1.3); FlashAttention-3 appeared in July 2024, after the 67B
# run, and ran no MLA backward in 2024 (scenarios/deepseek-v3.yaml gives the sources).
DEEPSEEK_FA2_BLOCKS = {"DSV3", "DSV2", "DS"}
HOPPER_PRESETS = {"h100", "h800", "h200"}

# Source blocks whose interleaved pipeline holds one transformer block per virtual stage, with the
# embedding and the output head each a virtual stage of their own. Llama 3 (arXiv 2407.21783 sec 3.3.2):
# "we reduce one Transformer layer each from the first and the last stages ... This means that the first
# model chunk on the first stage has only the embedding, and the last model chunk on the last stage has
# only output projection and loss calculation": a chunk is one block, so vpp = (layers + 2) / pp.
ONE_BLOCK_CHUNK_BLOCKS = {"LLAMA3"}


def read_csv(path: str | Path) -> list[dict]:
    if special_file(path):  # a FIFO blocks forever, /dev/zero fills memory
        raise ConfigError("--csv", f"{path} is not a regular file", "a CSV file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except FileNotFoundError:
        raise ConfigError("--csv", f"file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError("--csv", f"{path} is a directory", "a CSV file") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise ConfigError("--csv", f"{path} is not a readable CSV ({e})") from None
    except OSError as e:
        raise ConfigError("--csv", f"{path}: {e.strerror or e}") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ConfigError("--csv", f"{path} lacks column {missing[0]!r}", "the schema of shared/validation/README.md")
    return rows


def _int(row: dict, key: str, default: int | None = None) -> int | None:
    v = (row.get(key) or "").strip()
    if not v:
        return default
    try:
        x = float(v)
    except ValueError:
        x = math.nan
    if not (math.isfinite(x) and x == int(x)):
        raise ConfigError(f"{row.get('run_id', '?')}.{key}", f"{v!r} is not a whole number", "an integer")
    return int(x)


def _measured(row: dict, key: str) -> float:
    """A measured metric of a row: a finite positive number."""
    v = row[key].strip()
    try:
        x = float(v)
    except ValueError:
        x = math.nan
    if not (math.isfinite(x) and x > 0):
        raise ConfigError(f"{row.get('run_id', '?')}.{key}", f"{v!r} is not a positive number", "a measured value > 0")
    return x


def default_vpp(layers: int, pp: int) -> int:
    """Virtual stages per rank for an interleaved run that does not state them: the fewest above one
    that Megatron-LM accepts (it requires the layers of a rank to split evenly into virtual stages),
    or 2 when none does (then modelled with uneven chunks, and warned)."""
    if layers % pp == 0 and layers // pp >= 2:
        per_rank = layers // pp
        # The smallest divisor above one: below the square root, or the count itself (a prime). (Walking up
        # to the count took ~1e12 steps for a row whose layers the model's range check refuses later.)
        v = 2
        while v * v <= per_rank:
            if per_rank % v == 0:
                return v
            v += 1
        return per_rank
    return 2


def row_to_raw(row: dict) -> tuple[dict, list[str]]:
    """The scenario mapping for one CSV row, and the defaults it had to assume."""
    defaults: list[str] = []
    g = lambda k: (row.get(k) or "").strip()  # noqa: E731
    moe = g("model_type") == "moe"
    attention = g("attention") or "mha"
    model = {
        "name": row["run_id"], "layers": _int(row, "layers"), "hidden": _int(row, "hidden"), "heads": _int(row, "heads"),
        "vocab": _int(row, "vocab"), "attention": attention, "kv_heads": _int(row, "kv_heads", 0),
        "head_dim": _int(row, "head_dim", 0), "mlp": g("mlp") or "gelu",
        "tied_embeddings": g("tied_embeddings") == "true",
        "dense_intermediate": _int(row, "ffn_hidden", 0),
    }
    if attention == "mla":
        for k in ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            model[k] = _int(row, k, 0)
    if g("sliding_window"):
        model["sliding_window"] = _int(row, "sliding_window")
        model["sliding_window_every"] = 2  # gpt-oss alternates windowed and full layers (README)
    if moe:
        model.update(n_routed_experts=_int(row, "experts_total"), experts_per_token=_int(row, "experts_active"),
                     n_shared_experts=_int(row, "experts_shared", 0), moe_intermediate=_int(row, "expert_ffn"),
                     first_k_dense=_int(row, "first_k_dense", 0))
    gpu = g("gpu")
    if gpu not in GPU_PRESETS:
        raise ConfigError("gpu", f"unknown GPU {gpu!r}", ", ".join(GPU_PRESETS))
    if not g("num_gpus"):
        raise ConfigError("num_gpus", "not published for this run")
    cluster = {"preset": GPU_PRESETS[gpu], "num_gpus": _int(row, "num_gpus")}
    schedule = g("pp_schedule") or "1f1b"
    pp = _int(row, "pp", 1)
    if pp < 1:
        raise ConfigError(f"{row.get('run_id', '?')}.pp", f"{pp} is not a pipeline size", "an integer >= 1")
    if pp == 1:
        schedule = "1f1b"
    vpp = _int(row, "vpp")
    layers = _int(row, "layers")
    if layers is None:
        raise ConfigError(f"{row.get('run_id', '?')}.layers", "missing", "the number of transformer layers")
    block = row["run_id"].split("-")[0]  # the source block, which the block tables below are keyed by
    if schedule == "interleaved" and not vpp:
        if block in ONE_BLOCK_CHUNK_BLOCKS and (layers + 2) % pp == 0:
            vpp = (layers + 2) // pp  # stated by the source's layout, not a default
        else:
            vpp = default_vpp(layers, pp)
            defaults.append(f"vpp={vpp}")
    mb = _int(row, "micro_batch")
    if mb is None:
        mb = 1
        defaults.append("micro_batch=1")
    recompute = g("recompute")
    if not recompute:
        recompute = "none"
        defaults.append("recompute=none")
    tp = _int(row, "tp", 1)
    if g("sp"):
        sp = g("sp") == "true"
    else:
        sp = tp > 1  # Megatron pairs sequence parallelism with TP (--sequence-parallel) in its recipes
        if tp > 1:
            defaults.append("sp=true")
    notes = g("notes")
    plan = {
        "tp": tp, "pp": pp, "cp": _int(row, "cp", 1), "ep": _int(row, "ep", 1),
        "etp": _int(row, "etp", 1) if moe else 1,
        "dp": _int(row, "dp", 0), "vpp": vpp or 1, "schedule": schedule, "micro_batch": mb,
        "zero": _int(row, "zero", 1), "recompute": recompute, "precision": g("precision") or "bf16",
        "sp": sp,
        "tp_comm_overlap": "tp-comm-overlap" in notes,
        "ep_overlap": "on" if "all-to-all overlap on" in notes else "auto",
        # Megatron's default cuts equal layer counts; rows whose notes describe another split are balanced.
        "layer_split": "balanced" if ("split counts embedding" in notes or "one layer fewer" in notes) else "uniform",
        "cp_comm": "allgather" if "all-gather based CP" in notes else "ring",
    }
    if g("fp8_recipe"):
        plan["fp8_recipe"] = g("fp8_recipe")
    if plan["precision"] == "fp16":
        # Megatron keeps and reduces gradients in the parameters' dtype under FP16 (FP32 is forced only
        # for BF16: megatron/arguments.py; Megatron-Bridge's fp16_mixed sets grad_reduce_in_fp32=False).
        plan["grad_dtype"] = "fp16"
        defaults.append("grad_dtype=fp16")
    if block in MEGATRON_DROPOUT_BLOCKS:
        model["attention_dropout"] = model["hidden_dropout"] = MEGATRON_DEFAULT_DROPOUT
        defaults.append(f"dropout={MEGATRON_DEFAULT_DROPOUT}")
    if moe and attention != "mla" and block in ALLTOALL_DISPATCHER_BLOCKS:
        plan["dispatcher"] = "alltoall"
        defaults.append("dispatcher=alltoall")
    elif moe and "alltoall dispatcher" in notes:  # stated by the row itself: not a default
        plan["dispatcher"] = "alltoall"
    if block in UNFUSED_LOSS_BLOCKS:
        plan["loss_kernel"] = "unfused"
        defaults.append("loss_kernel=unfused")
    if block in LOCAL_DDP_BLOCKS or "overlap_grad_reduce off" in notes:  # the latter stated by the row itself
        plan["grad_reduce_overlap"] = False
    if block in UNFUSED_ATTENTION_BLOCKS and attention in ("mha", "gqa", "mqa") and not g("sliding_window"):
        plan["attention_kernel"] = "unfused"
    if block in TE_ATTENTION_BLOCKS and cluster["preset"] in HOPPER_PRESETS:
        plan["attention_kernel"] = "cudnn"
        defaults.append("attention_kernel=cudnn")
    if block in DEEPSEEK_FA2_BLOCKS:
        plan["attention_kernel"] = "fa2"
        defaults.append("attention_kernel=fa2")
    if attention == "mla" or "DeepSeek" in g("source"):
        # DeepSeek-V3's FP8 recipe keeps the AdamW moments in BF16 (V3 report sec 3.3.3).
        plan["moment_dtype"] = "bf16" if g("precision") == "fp8" else "fp32"
    elif "BF16 AdamW moments" in notes:  # stated by the row itself (Megatron's exp_avg_dtype=bf16)
        plan["moment_dtype"] = "bf16"
    training = {"seq_len": _int(row, "seq_len"), "global_batch": _int(row, "global_batch_seqs"), "tokens": 1e12}
    return {"name": row["run_id"], "model": model, "cluster": cluster, "plan": plan, "training": training}, defaults


def _stated_peak(definition: str, sc) -> float:
    """The peak (FLOP/s) a definition divides by: the number it states ("peak 989", "/ 312"), else
    the BF16 peak of the GPU the row ran on."""
    found = re.search(r"(?:peak|/)\s*(\d+(?:\.\d+)?)", definition)
    if found and not float(found.group(1)) > 0:
        raise ConfigError("mfu_definition", f"divides by a peak of {found.group(1)}", "a peak > 0 (e.g. 'peak 989')")
    return float(found.group(1)) * 1e12 if found else sc.cluster.gpu.bf16_tflops * 1e12


def megatron_flops_per_token(m, seq: int) -> float:
    """Model FLOPs per token as Megatron-LM logs them (``num_floating_point_operations`` in
    megatron/training/training.py, ``transformer_flops``): 3 passes x 2 FLOPs per multiply-add over
    the QKV and output projections, the causal core attention (half the s x s pairs, QK^T and PV), the
    routed experts' (top-k) and shared experts' FFNs (x3/2 for SwiGLU's stacked gate), the dense FFNs of
    the first layers, and the logits. Norms, router and embedding are not counted. The vocab is taken
    as the row gives it: Megatron pads it to ``make_vocab_size_divisible_by`` x TP, which the Qwen3
    recipes set to 1187 so that 151,936 stays unpadded. MLA is counted differently there and is not
    supported here."""
    if m.is_mla:
        raise ConfigError("mfu_definition", "'megatron-moe' counts GQA/MHA attention only (MLA is not supported)",
                          "palm 6N+attn, megatron-72, or a GQA/MHA model")
    h, ffn_factor = m.hidden, 3 if m.mlp == "swiglu" else 2
    q = m.heads * m.dim_per_head
    kv = m.n_kv_heads * m.dim_per_head
    attn = h * (q + 2 * kv) + q * seq / 2 * 2 + q * h
    mlp = (m.dense_intermediate * ffn_factor * m.n_dense_layers
           + (m.moe_intermediate * m.experts_per_token + m.moe_intermediate * m.n_shared_experts)
           * ffn_factor * m.n_moe_layers)
    return 6 * (h * mlp + attn * m.layers + h * m.vocab)


def mfu_under(definition: str, sc, tokens_per_s_per_gpu: float) -> float:
    """MFU of a throughput under a published FLOP convention.

    The peaks are the denominators the sources divided by, as the CSV's ``mfu_definition`` column
    states them ("BF16 MFU, peak 989", "TFLOP/s / 989", "TFLOP/s / 312"), not the cluster preset's;
    a definition that states none divides by the row's GPU's BF16 peak."""
    m = sc.model
    seq = sc.training.seq_len
    L, h, V = m.layers, m.hidden, m.vocab
    if definition.startswith("palm"):
        pc = param_counts(m)
        n = pc.total - pc.embedding
        per_token = 6 * n + 12 * L * m.heads * m.dim_per_head * seq
    elif definition.startswith("megatron-72"):
        per_token = 72 * L * h * h * (1 + seq / (6 * h) + V / (12 * L * h))
    elif definition.startswith("megatron-moe"):
        per_token = megatron_flops_per_token(m, seq)
    else:
        raise ConfigError("mfu_definition", f"unsupported {definition!r}", "palm 6N+attn, megatron-72, megatron-moe")
    return tokens_per_s_per_gpu * per_token / _stated_peak(definition, sc)


def validate_rows(rows: list[dict], engine: str = "analytic", profile=None) -> tuple[list[RowResult], float | None]:
    from .api import predict
    from .profile import load_profile
    from .timer import device_mismatch

    given = load_profile(profile) if isinstance(profile, str) else profile

    results: list[RowResult] = []
    for row in rows:
        if (row.get("include") or "").strip().lower() != "true":
            continue
        rid = row["run_id"]
        try:
            raw, defaults = row_to_raw(row)
            sc = scenario_from_dict(raw, name=rid)
            pred = predict(sc, engine=engine, profile=profile)
            if "recompute=none" in defaults and not pred.fits_in_memory:
                # The run did happen, so it fit: take the least recompute under which the plan fits.
                for rc in ("selective", "full"):
                    raw2 = {**raw, "plan": {**raw["plan"], "recompute": rc}}
                    try:
                        sc2 = scenario_from_dict(raw2, name=rid)
                    except ConfigError:  # e.g. full recompute under Megatron's EP overlap
                        continue
                    pred2 = predict(sc2, engine=engine, profile=profile)
                    if pred2.fits_in_memory:
                        sc, pred = sc2, pred2
                        defaults = [d if d != "recompute=none" else f"recompute={rc} (none does not fit)"
                                    for d in defaults]
                        break
        except ConfigError as e:
            results.append(RowResult(rid, "", None, None, None, reason=str(e)))
            continue
        tps = (row.get("tokens_per_s_per_gpu") or "").strip()
        if tps:
            measured = _measured(row, "tokens_per_s_per_gpu")
            predicted = pred.tokens_per_s_per_gpu
            metric = "tokens/s/GPU"
        elif (row.get("mfu_pct") or "").strip():
            measured = _measured(row, "mfu_pct")
            definition = (row.get("mfu_definition") or "").strip()  # None: a row shorter than the header
            try:
                predicted = 100 * mfu_under(definition, sc, pred.tokens_per_s_per_gpu)
            except ConfigError as e:  # name the row, as _measured does
                raise ConfigError(f"{rid}.{e.field}", e.problem, e.allowed) from None
            metric = "MFU % (" + definition.split("(")[0].strip() + ")"
        else:
            results.append(RowResult(rid, "", None, None, None, reason="no measured throughput or MFU"))
            continue
        err = 100 * (predicted - measured) / measured
        if not math.isfinite(err):  # a measured value too small to divide by (1e-320)
            raise ConfigError(f"{rid}.{'tokens_per_s_per_gpu' if tps else 'mfu_pct'}",
                              f"{measured!r} leaves the error undefined", "a measured value > 0")
        mem = ""
        if not pred.fits_in_memory:
            mem = f"does not fit: {pred.peak_memory_gib:.0f} GiB > {sc.cluster.gpu.hbm_gib:.0f} GiB"
        note = device_mismatch(given, sc.cluster.gpu) if given is not None else None
        results.append(RowResult(rid, metric, predicted, measured, err, defaults=defaults, memory_note=mem,
                                 profile_note=note or "", step_parts_s=pred.extra.get("step_parts_s", {})))
    errs = [abs(r.error_pct) for r in results if r.error_pct is not None and math.isfinite(r.error_pct)]
    mape = sum(errs) / len(errs) if errs else None
    return results, mape


def short_source(text: str) -> str:
    """A citation in a few words, author (or repository) and year: the words before its title, version
    or details, a repository without its owner, no file names (README, *.md), no "et al.", and the year
    of its arXiv number when no year is left (``Llama Team 'The Llama 3 Herd of Models' (arXiv
    2407.21783) Table 4`` -> ``Llama Team 2024``; ``NVIDIA/Megatron-LM README 2024 'Training Speed
    ...'`` -> ``Megatron-LM 2024``; ``Narayanan et al. 2021 'Efficient ...'`` -> ``Narayanan 2021``)."""
    head = re.sub(r"\bet al\.?", "", re.split(r" '| \(|[,;:]", text.strip(), maxsplit=1)[0])
    words = [w.rsplit("/", 1)[-1] for w in head.split()
             if not re.fullmatch(r"readme|\S+\.(md|png|pdf|json|csv|txt|html?)", w, re.IGNORECASE)]
    short = " ".join(words)
    arxiv = re.search(r"arXiv:? ?(\d\d)(\d\d)\.\d{4,5}", text)  # YYMM.NNNNN
    if arxiv and not re.search(r"\b(19|20)\d\d\b", short):
        short = f"{short} 20{arxiv.group(1)}".strip()
    return short


def describe_run(row: dict) -> str:
    """What a validation run was, in words, from its own CSV columns, for readers of a run id such as
    ``MB2511-QWEN3-30B-A3B``: the model's kind (dense, or MoE with its active / routed experts), the
    GPUs and the source in a few words, e.g. ``MoE 8/128 · 16× H100 · Megatron-Bridge``. Short enough
    to sit beside the id in a table (the dashboard's Validation page); an empty column is left out."""
    def col(key: str) -> str:
        return (row.get(key) or "").strip()

    kind = col("model_type").lower()
    model = kind
    if kind == "moe":
        model = "MoE" + (f" {col('experts_active')}/{col('experts_total')}"
                         if col("experts_active") and col("experts_total") else "")
    gpu = col("gpu").split("-")[0]  # H100-SXM-80GB -> H100
    n = col("num_gpus")
    gpus = f"{int(n):,}× {gpu}" if n.isdigit() and gpu else (gpu or (f"{n} GPUs" if n else ""))
    return " · ".join(part for part in (model, gpus, short_source(col("source"))) if part)


def results_json(results: list[RowResult], mape: float | None) -> dict:
    return {
        "rows": [
            {"run_id": r.run_id, "metric": r.metric, "predicted": r.predicted, "measured": r.measured,
             "error_pct": r.error_pct, **({"reason": r.reason} if r.reason else {}),
             **({"defaults": r.defaults} if r.defaults else {}),
             **({"memory": r.memory_note} if r.memory_note else {}),
             **({"step_parts_s": r.step_parts_s} if r.step_parts_s else {})}
            for r in results
        ],
        "mape_pct": mape,
    }


__all__ = ["DEFAULT_CSV", "read_csv", "row_to_raw", "validate_rows", "results_json", "mfu_under", "to_dict",
           "describe_run", "short_source"]
