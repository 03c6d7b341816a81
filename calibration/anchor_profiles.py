"""Build the shipped profiles from published measurements (no GPU needed).

``h800-anchors`` comes from DeepSeek's own H800 figures in
``../shared/anchors/kernels_and_links.json`` (DeepGEMM FP8 GEMMs, DeepEP
all-to-all, FlashMLA's memory-bound rate), with BF16 GEMM and attention rows
measured on H100 SXM (the same SMs, clocks and HBM as H800; only NVLink
differs). ``h100-published`` and ``a100-published`` come from
``calibration/profiles/sources/published_measurements.json``. Every row
carries its ``source``. Run ``python -m calibration.anchor_profiles`` to
rebuild; the output is deterministic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from simulator.profile import PROFILES_DIR, SCHEMA, SCHEMA_VERSION, save_profile

ROOT = Path(__file__).resolve().parent.parent
ANCHORS = Path(os.environ.get("GPUHOURS_SHARED", ROOT.parent / "shared")) / "anchors" / "kernels_and_links.json"
PUBLISHED = PROFILES_DIR / "sources" / "published_measurements.json"
KL = "../shared/anchors/kernels_and_links.json"


def _load(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def _ceiling(r: dict) -> dict:
    """MAMF rows are the best rate over a search of shapes: a bound, not a point (profile.py)."""
    return {"ceiling": True} if "MAMF" in r.get("kind", "") else {}


def _h100_gemm_rows(pub: dict, dtype_out: str = "bf16") -> list[dict]:
    rows = []
    for r in pub["gemm"]:
        gpu = r["gpu"]
        if not gpu.startswith("H100"):
            continue
        if r["dtype"] in ("bf16", "fp16"):
            rows.append({"dtype": dtype_out, "m": r["m"], "n": r["n"], "k": r["k"], "tflops": r["tflops"],
                         **_ceiling(r), "source": f"{r['source']} ({gpu}, {r['dtype']}, {r.get('library', '')}, "
                                                  f"{r.get('kind', '')})"})
    return rows


def _h100_fp8_rows(pub: dict) -> list[dict]:
    return [
        {"dtype": "fp8", "m": r["m"], "n": r["n"], "k": r["k"], "tflops": r["tflops"], **_ceiling(r),
         "source": f"{r['source']} ({r['gpu']}, {r['dtype']}, {r.get('kind', '')})"}
        for r in pub["gemm"] if r["gpu"].startswith("H100") and "fp8" in r["dtype"] and r["m"] >= 1024
    ]


# Attention libraries in the published H100 rows, and the tag their rows carry in a profile
# ("" = the default flash rows a plan with attention_kernel=flash reads).
_ATTENTION_LIBRARIES = {"FlashAttention-3": "", "cuDNN": "cudnn", "FlashAttention-2": "fa2"}


def _h100_attention_rows(pub: dict) -> list[dict]:
    """H100 SXM attention, head dim 128, forward and backward, causal and not, as each source measured
    it, one set of rows per library: FlashAttention-3 (the default flash rows), cuDNN and
    FlashAttention-2 (tagged). Rows whose causal flag is neither stated nor inferred are left out.

    The FA3 paper's forward figures (16 heads) come in a causal and a non-causal variant; its backward
    figure was measured without the causal mask (see each row's ``causal_note``). Tritonbench's FA3
    runs (48 heads, 2026) time the causal backward itself; where neither covers a shape, the op timer
    derives a causal backward rate (``simulator.profile.Profile.attention_tflops``)."""
    rows = []
    for r in pub["attention"]:
        lib = next((tag for name, tag in _ATTENTION_LIBRARIES.items() if r.get("library", "").startswith(name)), None)
        if lib is None or not str(r["gpu"]).startswith("H100-SXM"):
            continue
        direction = r["direction"]
        if direction not in ("fwd", "bwd") or r.get("head_dim") != 128 or r.get("causal") is None:
            continue
        rows.append({"dtype": "bf16", "direction": direction, "seq": r["seq"], "heads": r["heads"],
                     "qk_dim": 128, "v_dim": 128, "causal": r["causal"], "tflops": r["tflops"],
                     **({"library": lib} if lib else {}),
                     "source": f"{r['source']} ({r['gpu']}, {r['library']}"
                               + (", read off a plot" if r.get("read_off_plot") else "")
                               + (", causal flag inferred from the figure's standard-attention bars)"
                                  if r.get("causal_inferred") else ")")})
    return rows


def _meta(name: str, device: dict, source: str) -> dict:
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": name, "created": "2026-11-22",
            "source": source, "device": device, "tables": {}}


# DeepGEMM's tables were timed in short bursts, below the power limit. deepseek-ai/DeepGEMM PR #68
# (ademeure, merged March 2025) found that the harness then rebuilding its inputs between timed runs
# "gives the GPU enough time to 'cool down' and you avoid thermal throttling completely", and made it
# flush L2 between timed calls instead; bench_kineto (deep_gemm/testing/bench.py) today zeroes an 8 GB
# buffer before every timed call: milliseconds of memory-bound work around each GEMM of tens to hundreds
# of microseconds, the tensor cores idle most of the time either way. Which of the two timed the README
# tables of 2025-03-25 is not stated. A training step does not idle; the cluster's sustained clock
# corrects these rows (simulator.timer, Profile.at_sustained_clock), assuming they ran at the clock
# behind the datasheet peaks (1830 MHz; an unthrottled H800 may boost to 1980, DeepGEMM#120, which
# would make the correction larger).
DEEPGEMM_BURST = ("DeepGEMM's benchmark leaves the tensor cores idle between timed runs (deepseek-ai/DeepGEMM "
                  "PR #68; deep_gemm/testing/bench.py)")


# XLA's GEMM table (the BF16 rows from matmul_interpolator_data.h) was timed one kernel at a time, each
# run between a host-to-device copy of its operands and a device-to-host copy of its result.
XLA_TABLE = "https://github.com/openxla/xla/blob/main/xla/service/gpu/model/matmul_interpolator_data.h"
XLA_BURST = ("XLA's matmul_perf_table_gen times each GEMM alone: every one of its 5 profiled runs is an "
             "HloRunner::ExecuteWithExecutable, which copies the operands from the host and the result back "
             "(xla/tools/matmul_perf_table_gen.cc, MatmulPerfTableGen::Profile; xla/service/hlo_runner.cc, "
             "TransferLiteralsToDevice / TransferLiteralFromDevice), so the tensor cores idle between kernels")


def _hopper_burst() -> dict:
    """Tables timed in bursts in the Hopper profiles: DeepGEMM's FP8 tables, and XLA's rows of the BF16
    GEMM table (its other sources, Triton's and the MAMF finder's loops, are taken as measured)."""
    return {"gemm/fp8": DEEPGEMM_BURST, "grouped_gemm/fp8": DEEPGEMM_BURST,
            "gemm/bf16": [{"source": XLA_TABLE, "evidence": XLA_BURST}]}


def build_h800(anchors: dict, pub: dict) -> dict:
    spec = anchors["gpu_specs"]["H800_SXM5"]
    prof = _meta("h800-anchors", {"name": "NVIDIA H800 SXM5", "kind": "gpu", "sms": spec["sms"],
                                  "clock_mhz": spec["boost_clock_MHz"], "hbm_gbps": spec["hbm_TBps"] * 1000,
                                  "measured": False},
                 "published H800 figures (DeepGEMM, DeepEP, FlashMLA) plus H100 SXM BF16 GEMM/attention measurements")
    prof["burst_tables"] = _hopper_burst()
    t = prof["tables"]
    t["gemm"], t["grouped_gemm"] = _deepgemm_rows(anchors["deepgemm"], cutlass36=False)
    t["gemm"] += _h100_gemm_rows(pub)
    t["attention"] = _h100_attention_rows(pub)
    fm = anchors["flashmla"]["dense_decode_bf16_h800"]
    # FlashMLA's large memory-bound rate on H800 (its size is not stated: placed at 1 GB), and how
    # smaller kernels fall short of it from PyTorch's elementwise kernel on H100 (the same HBM3).
    t["memory_bound"] = [{"op": "*", "bytes": 1e9, "gbps": fm["memory_bound_GBps"],
                          "source": f"FlashMLA memory-bound decode on H800, {fm['source']}"}] + [
        {**r, "source": r["source"] + " (H100 = H800 memory system)"} for r in _memory_sweep_rows(pub, "H100")]
    # DeepEP normal kernels as first released (Feb 2025), the closest to what V3's training used;
    # later rows (2025-04-22, after IBGDA tuning) are up to 30% faster. Bandwidth is the bottleneck
    # link's: NVLink for EP8 (~160 GB/s usable), RDMA for EP16+ (CX7 400 Gb/s ~ 50 GB/s).
    ep = anchors["deepep"]["normal_kernels_v1_2025_02_25_original"]
    rows = []
    for r in ep["rows"]:
        link, nominal = ("nvlink", 160) if r["type"] == "intranode" else ("ib", 50)
        for op, key in (("all_to_all_dispatch", "dispatch_GBps"), ("all_to_all_combine", "combine_GBps")):
            rows.append({"op": op, "ranks": r["ep"], "gbps": r[key], "link": link, "link_gbps": nominal,
                         "source": f"DeepEP normal kernels, {ep['source']}"})
    t["collectives"] = rows
    return prof


def _deepgemm_rows(dg: dict, cutlass36: bool) -> tuple[list[dict], list[dict]]:
    """DeepGEMM's FP8 normal and grouped-contiguous rows (H800).

    ``cutlass36``: the rate of DeepSeek's internal CUTLASS 3.6 kernel on each shape instead, i.e.
    DeepGEMM's measured TFLOPS divided by the speedup its README prints over that kernel.
    """
    src = dg["source"]

    def rate(r: dict, table: str) -> tuple[float, str]:
        if not cutlass36:
            return r["TFLOPS"], f"DeepGEMM {table} table, {src}"
        return (round(r["TFLOPS"] / r["speedup"], 1),
                f"DeepGEMM {table} TFLOPS {r['TFLOPS']} / printed speedup {r['speedup']} over the internal "
                f"CUTLASS 3.6 kernel, {src}")

    # Both kernels scale FP8 operands in DeepSeek's fine-grained tiles (DeepGEMM README: "FP8 GEMMs with
    # fine-grained scaling"; V3 sec 3.3.2), the tag a calibrated row carries for the same scheme.
    scaling = "blockwise-1x128/128x128"
    gemm, grouped = [], []
    for r in dg["normal_gemm_2025_03_25"]:
        tflops, source = rate(r, "normal GEMM")
        gemm.append({"dtype": "fp8", "m": r["M"], "n": r["N"], "k": r["K"], "tflops": tflops, "fp8_scaling": scaling,
                     "source": f"{source} ({KL} deepgemm.normal_gemm_2025_03_25)"})
    for r in dg["grouped_contiguous_2025_03_25"]:
        tflops, source = rate(r, "grouped contiguous")
        grouped.append({"dtype": "fp8", "groups": r["groups"], "m_per_group": r["M_per_group"], "n": r["N"],
                        "k": r["K"], "tflops": tflops, "fp8_scaling": scaling, "source": source})
    return gemm, grouped


def build_h800_2024(anchors: dict, pub: dict) -> dict:
    """H800 with the FP8 GEMM kernels of DeepSeek-V3's own training run (2024).

    V3 was trained before DeepGEMM existed (V3 report Dec 2024; DeepGEMM Feb 2025). DeepGEMM's README
    prints, for every shape, its speedup over "DeepSeek's internal CUTLASS 3.6-based implementation",
    the kernels the run used; dividing each measured TFLOPS by that printed speedup gives the rate of
    the older kernel on the same shape. Everything else is ``h800-anchors`` (DeepEP rows there are
    already the first release, the closest to what training used).
    """
    prof = build_h800(anchors, pub)
    prof["name"] = "h800-2024"
    prof["source"] = ("h800-anchors with FP8 GEMM rows at DeepSeek's internal CUTLASS 3.6 kernels "
                      "(DeepGEMM TFLOPS / DeepGEMM's printed speedup), as in V3's 2024 training run")
    t = prof["tables"]
    t["gemm"], t["grouped_gemm"] = _deepgemm_rows(anchors["deepgemm"], cutlass36=True)
    t["gemm"] += _h100_gemm_rows(pub)
    return prof


def _collective_rows(pub: dict, gpu_prefix: str) -> list[dict]:
    rows = []
    for r in pub["collectives"]:
        if not str(r["gpu"]).startswith(gpu_prefix) or r.get("nodes") != 1:
            continue
        if r.get("op") == "all_reduce" and str(r.get("algo", "")).lower().startswith("ring") and isinstance(r["busbw_gbps"], str):
            lo, hi = (float(x) for x in r["busbw_gbps"].split("-"))
            # Nominal NVLink per direction, as in the cluster presets: NVLink 4 900 GB/s bidirectional
            # (anchors gpu_specs.H100_SXM5.nvlink_GBps_bidirectional), NVLink 3 600 GB/s (A100 datasheet,
            # scenarios/clusters/a100.yaml).
            rows.append({"op": "all_reduce", "ranks": 8, "gbps": (lo + hi) / 2, "link": "nvlink",
                         "link_gbps": 450 if gpu_prefix.startswith("H") else 300, "source": r["source"]})
    return rows


def _memory_sweep_rows(pub: dict, gpu: str) -> list[dict]:
    """Memory-bound rows from published bandwidth-versus-size sweeps of one GPU.

    A small kernel does not reach the HBM's sustained rate: launch, ramp-up and tail take a few
    microseconds whatever the size, and too few bytes are in flight to fill the memory pipeline.
    A sweep over sizes measures that directly; each point becomes a row at its bytes moved (reads
    plus writes, as the source counts them), so the op timer interpolates by size."""
    rows = []
    for sw in pub.get("memory_bandwidth_sweeps", []):
        if not str(sw["gpu"]).startswith(gpu):
            continue
        bpe = sw["bytes_per_element"]
        points = [(e * bpe, g) for e, g in sw.get("points_elements_gbps", [])]
        points += [(e * bpe, e * bpe / s / 1e9) for e, s in sw.get("points_elements_seconds", [])]
        for nbytes, gbps in points:
            rows.append({"op": "*", "bytes": nbytes, "gbps": round(gbps, 1),
                         "source": f"{sw['source']} ({sw['kernel']}; {sw['gpu']})"})
    return rows


def build_h100(pub: dict, anchors: dict) -> dict:
    spec = anchors["gpu_specs"]["H100_SXM5"]
    prof = _meta("h100-published", {"name": "NVIDIA H100 SXM5", "kind": "gpu", "sms": spec["sms"],
                                    "hbm_gbps": spec["hbm_TBps"] * 1000, "measured": False},
                 "published H100 SXM measurements (see each row)")
    t = prof["tables"]
    # FP8 GEMMs by shape: DeepGEMM's tables, measured on H800 (the H100 SXM's silicon: same SMs,
    # clocks and HBM; only NVLink differs). The one published H100 FP8 row is a MAMF maximum, a
    # ceiling. DeepGEMM scales blockwise; cuBLAS tensorwise FP8 does the same tensor-core work.
    dg_gemm, dg_grouped = (
        [{**r, "source": r["source"] + " (H800 = H100 SXM silicon)"} for r in rows]
        for rows in _deepgemm_rows(anchors["deepgemm"], cutlass36=False))
    # (The FP8 table's one other row, a MAMF maximum, is a ceiling: it bounds the DeepGEMM rows.)
    prof["burst_tables"] = _hopper_burst()
    t["gemm"] = _h100_gemm_rows(pub) + _h100_fp8_rows(pub) + dg_gemm
    t["grouped_gemm"] = dg_grouped
    t["attention"] = _h100_attention_rows(pub)
    # By size: PyTorch's elementwise kernel from 67 MB, Liger's RMSNorm below it (8.4 to 34 MB), both H100
    # (vLLM's copy row, of unstated size, stays in the sources).
    t["memory_bound"] = _memory_sweep_rows(pub, "H100")
    t["collectives"] = _collective_rows(pub, "H100") + [
        {"op": op, "ranks": 16, "gbps": 47.0, "link": "ib", "link_gbps": 50,
         "source": "NVIDIA/nccl-tests issue 290 (NVIDIA maintainer: 46-48 GB/s per 400 Gb/s NDR NIC)"}
        for op in ("all_reduce", "reduce_scatter", "all_gather", "p2p", "all_to_all")
    ] + [
        # NCCL all-to-all (Megatron's all-to-all MoE dispatcher) inside one NVLink4 node.
        {"op": "all_to_all", "ranks": 8, "gbps": 370.0, "link": "nvlink", "link_gbps": 450,
         "source": "NVIDIA/nccl-tests issue 212 (sjeaugey, NVIDIA: non-all-reduce collectives reach ~370 GB/s "
                   "bus bandwidth on 8x H100 NVLink4, 450 GB/s line rate less ~20% protocol overhead)"},
    ]
    return prof


def build_a100(pub: dict) -> dict:
    prof = _meta("a100-published", {"name": "NVIDIA A100 SXM4 80GB", "kind": "gpu", "sms": 108, "measured": False},
                 "published A100 measurements (see each row); no citable per-shape attention figures: roofline")
    t = prof["tables"]
    t["gemm"] = [
        {"dtype": "bf16", "m": r["m"], "n": r["n"], "k": r["k"], "tflops": r["tflops"], **_ceiling(r),
         "source": f"{r['source']} ({r['gpu']}, {r.get('library', '')}, {r.get('kind', '')})"}
        # MAMF best shapes (the ceiling) and a cuBLAS square sweep (ordinary shapes; FP16 = BF16 rate)
        for r in pub["gemm"] if (r["gpu"] == "A100-SXM" and r["dtype"] == "bf16") or r.get("profile_use") == "a100"
    ]
    # Memory-bound kernels by size: PyTorch's own elementwise kernel from a few kB to 1.6 GB moved.
    # (The A800 PCIe row of earlier versions is left out: another board, at a size it did not state.)
    t["memory_bound"] = _memory_sweep_rows(pub, "A100")
    t["collectives"] = [
        {"op": "all_reduce", "ranks": 8, "gbps": 230.0, "link": "nvlink", "link_gbps": 300,
         "source": "NVIDIA/nccl-tests issue 149 (NVIDIA maintainer: ~230 GB/s busbw on 8x A100 NVLink3)"}
    ]
    return prof


def main() -> None:
    anchors, pub = _load(ANCHORS), _load(PUBLISHED)
    for prof in (build_h800(anchors, pub), build_h800_2024(anchors, pub), build_h100(pub, anchors), build_a100(pub)):
        path = save_profile(prof, PROFILES_DIR / f"{prof['name']}.json")
        n = sum(len(v) for v in prof["tables"].values())
        print(f"wrote {path} ({n} rows)")


if __name__ == "__main__":
    main()
