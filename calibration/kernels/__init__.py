"""Kernel families measured by ``gpuhours calibrate``, one module each.

``gemm`` (dense BF16/FP8), ``grouped_gemm`` (MoE experts; Triton kernel in
``grouped_gemm_triton``), ``attention`` (MLA through SDPA), ``memory_bound``
(quantize, norms, SwiGLU, permute, residual), ``sm_budget`` (a persistent GEMM
on N SMs) and ``collectives`` (torch.distributed). ``common`` holds the run
context and the float64 check; ``fp8`` the fine-grained FP8 quantizers.
Nothing is imported here: torch and Triton load only when a family runs.
"""
