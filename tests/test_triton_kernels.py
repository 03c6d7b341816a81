"""Our Triton kernels, checked under the Triton interpreter (TRITON_INTERPRET=1) on the CPU.

Triton reads TRITON_INTERPRET when a kernel is *decorated*, so the checks run
in a child process started with the variable set (this file run as a script):
the rest of the test session keeps its normal Triton. The child checks, on
tiny shapes against float64 references:

* the grouped GEMM in BF16 (empty group, partial tiles, K not a multiple of
  BLOCK_K), every output row written (NaN poison);
* the grouped GEMM in FP8 with DeepSeek's per-block scales (1x128 activation
  tiles, 128x128 weight blocks, a partial weight block in N), natively in FP8
  when the interpreter supports FP8 ``tl.dot`` (Triton 3.9 does); otherwise the
  same scaled path on the dequantized-grid values in FP32, reported as such;
* the persistent GEMM with fewer programs than tiles;
* the fused memory-bound kernels (RMSNorm, SwiGLU, FP8 1x128 quantization with its transpose);
* the tile schedule.

Note: the interpreter's BF16 ``tl.dot`` is wrong in Triton 3.9, so the kernels
upcast BF16 tiles to FP32 there (``UPCAST``); the BF16 tensor-core dot itself
is only exercised on a GPU (tests marked ``gpu`` in test_calibration.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _child() -> dict:
    """Runs in the interpreter child: every check, results as a dict."""
    import torch

    from calibration.kernels import fp8 as q8
    from calibration.kernels import grouped_gemm_triton as tk
    from calibration.kernels.common import rel_error
    from calibration.kernels.persistent_gemm_triton import persistent_gemm

    torch.manual_seed(0)
    res: dict = {}

    # Tile schedule: one entry per BLOCK_M tile of each non-empty group.
    tg, ts = tk.build_schedule(torch.tensor([5, 10, 10, 50], dtype=torch.int32), 16)  # sizes 5, 5, 0, 40
    res["schedule"] = [tg.tolist(), ts.tolist()]

    sizes = [5, 40, 0, 19]
    ends = torch.tensor(sizes).cumsum(0).to(torch.int32)
    m_total = int(ends[-1])

    def grouped_ref(a64, b64):
        outs, start = [], 0
        for g, n in enumerate(sizes):
            outs.append(a64[start:start + n] @ b64[g].t())
            start += n
        return torch.cat(outs)

    # BF16: N = 48, K = 80 (not a multiple of BLOCK_K = 32).
    a = torch.randn(m_total, 80).bfloat16()
    b = torch.randn(len(sizes), 48, 80).bfloat16()
    out = torch.full((m_total, 48), float("nan"), dtype=torch.bfloat16)
    tk.grouped_gemm(a, b, ends, out=out)
    res["bf16_all_written"] = bool(torch.isfinite(out.float()).all())
    res["bf16_err"] = rel_error(out, grouped_ref(a.double(), b.double()))

    # FP8 with block scales: K = 256 (two scale blocks), N = 160 (a partial 128-block).
    a = torch.randn(m_total, 256) * torch.logspace(-1, 1, 256)
    b = torch.randn(len(sizes), 160, 256)
    aq, a_s = q8.quantize_1x128(a)
    bq, bs = zip(*(q8.quantize_128x128(b[g]) for g in range(len(sizes))))
    bq, bs = torch.stack(bq), torch.stack(bs)
    deq_a = q8.dequantize_1x128(aq, a_s).double()
    deq_b = torch.stack([q8.dequantize_128x128(bq[g], bs[g]) for g in range(len(sizes))]).double()
    out = torch.full((m_total, 160), float("nan"), dtype=torch.bfloat16)
    try:
        tk.grouped_gemm(aq, bq, ends, a_scale=a_s.t().contiguous().t(), b_scale=bs, out=out)
        res["fp8_native"] = True
    except Exception as e:  # interpreter without FP8 dot: same scaled path on FP32 values
        res["fp8_native"] = False
        res["fp8_native_error"] = f"{type(e).__name__}: {e}"[:300]
        tk.grouped_gemm(aq.float(), bq.float(), ends, a_scale=a_s, b_scale=bs, out=out)
    res["fp8_all_written"] = bool(torch.isfinite(out.float()).all())
    res["fp8_err_vs_dequantized"] = rel_error(out, grouped_ref(deq_a, deq_b))
    res["fp8_err_vs_unquantized"] = rel_error(out, grouped_ref(a.double(), b.double()))

    # Fused memory-bound kernels: RMSNorm and SwiGLU into NaN-poisoned outputs (a row width that is not a
    # power of two), FP8 1x128 quantization of x and of its transpose equal to torch's, value for value.
    from calibration.kernels import memory_triton as mt

    x = (torch.randn(256, 384) * torch.logspace(-1, 1, 384)).bfloat16()
    w = torch.randn(384).bfloat16()
    y = torch.full_like(x, float("nan"))
    mt.rmsnorm(x, w, out=y)
    x64 = x.double()
    res["rmsnorm_err"] = rel_error(y, x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6) * w.double())
    gu = torch.randn(96, 2 * 200).bfloat16()
    y = torch.full((96, 200), float("nan"), dtype=torch.bfloat16)
    mt.swiglu(gu, out=y, block=64)  # four column blocks a row, the last one partial
    g, u = gu.double().chunk(2, -1)
    res["swiglu_err"] = rel_error(y, g * torch.sigmoid(g) * u)
    q, sc, qt, st = mt.quantize(x, rowwise=True, colwise=True)
    rq, rs = q8.quantize_1x128(x)
    rqt, rst = q8.quantize_1x128(x.t().contiguous())
    res["quant_equal"] = bool(torch.equal(q.float(), rq.float()) and torch.equal(sc, rs))
    res["quant_t_equal"] = bool(torch.equal(qt.float(), rqt.float()) and torch.equal(st, rst))
    q1, s1 = mt.quantize(x)
    qt1, st1 = mt.quantize(x, rowwise=False, colwise=True)
    res["quant_one_layout_equal"] = bool(torch.equal(q1.float(), rq.float()) and torch.equal(s1, rs)
                                         and torch.equal(qt1.float(), rqt.float()) and torch.equal(st1, rst))
    res["quant_err_vs_float64"] = rel_error(q8.dequantize_1x128(q, sc), x64)

    # The harness times them beside torch's eager chains (each checked against float64 first).
    import tempfile

    from calibration import runner
    from calibration.kernels.memory_bound import FUSED_OPS

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "mb.json")
        with contextlib.redirect_stderr(io.StringIO()):
            rc = runner.main(["--quick", "--device", "cpu", "--families", "memory_bound", "--out", out])
        rows = json.load(open(out))["tables"]["memory_bound"]
    res["harness_rc"] = rc
    res["harness_fused_timed"] = sorted({r["op"] for r in rows if "triton-fused" in (r.get("alternatives") or {})
                                         or r["variant"] == "triton-fused"})
    res["fused_ops"] = sorted(FUSED_OPS)

    # Persistent GEMM: 3 x 2 tiles of 16 x 32 spread over 1, 4 and 16 programs.
    a = torch.randn(40, 64).bfloat16()
    b = torch.randn(48, 64).bfloat16()
    ref = a.double() @ b.double().t()
    res["persistent_err"] = {}
    for programs in (1, 4, 16):
        out = torch.full((40, 48), float("nan"), dtype=torch.bfloat16)
        persistent_gemm(a, b, programs, out=out)
        res["persistent_err"][programs] = rel_error(out, ref) if torch.isfinite(out.float()).all() else float("inf")
    return res


@pytest.fixture(scope="module")
def interpreted():
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, __file__], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_tile_schedule(interpreted):
    groups, starts = interpreted["schedule"]
    assert groups == [0, 1, 3, 3, 3] and starts == [0, 5, 10, 26, 42]


def test_grouped_gemm_bf16_matches_float64(interpreted):
    assert interpreted["bf16_all_written"]
    assert interpreted["bf16_err"] < 1e-2


def test_grouped_gemm_fp8_block_scales_match_float64(interpreted):
    if not interpreted["fp8_native"]:
        pytest.skip("interpreter lacks FP8 dot; tested on dequantized values only: "
                    + interpreted.get("fp8_native_error", ""))
    assert interpreted["fp8_all_written"]
    assert interpreted["fp8_err_vs_dequantized"] < 1e-2
    assert interpreted["fp8_err_vs_unquantized"] < 6e-2  # the quantization itself


def test_grouped_gemm_fp8_scaling_logic(interpreted):
    """Passes natively or through the dequantized fallback: the scaling is right either way."""
    assert interpreted["fp8_all_written"]
    assert interpreted["fp8_err_vs_dequantized"] < 1e-2


def test_fused_memory_bound_kernels_match_their_references(interpreted):
    assert interpreted["rmsnorm_err"] < 1e-2 and interpreted["swiglu_err"] < 1e-2
    assert interpreted["quant_equal"] and interpreted["quant_t_equal"] and interpreted["quant_one_layout_equal"]
    assert interpreted["quant_err_vs_float64"] < 6e-2  # E4M3's own rounding


def test_harness_times_the_fused_kernels_beside_eager(interpreted):
    assert interpreted["harness_rc"] == 0  # every check passed
    assert interpreted["harness_fused_timed"] == interpreted["fused_ops"]


def test_persistent_gemm_any_program_count(interpreted):
    for programs, err in interpreted["persistent_err"].items():
        assert err < 1e-2, (programs, err)


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("run with TRITON_INTERPRET=1")
    print(json.dumps(_child()))
