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
* the tile schedule.

Note: the interpreter's BF16 ``tl.dot`` is wrong in Triton 3.9, so the kernels
upcast BF16 tiles to FP32 there (``UPCAST``); the BF16 tensor-core dot itself
is only exercised on a GPU (tests marked ``gpu`` in test_calibration.py).
"""

from __future__ import annotations

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


def test_persistent_gemm_any_program_count(interpreted):
    for programs, err in interpreted["persistent_err"].items():
        assert err < 1e-2, (programs, err)


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("run with TRITON_INTERPRET=1")
    print(json.dumps(_child()))
