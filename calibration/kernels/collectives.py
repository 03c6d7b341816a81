"""Collectives through torch.distributed, when this machine has more than one GPU.

One process per GPU (spawned here), NCCL backend, the usual collectives over a
range of message sizes. Bandwidth follows nccl-tests' conventions so that rows
measured here and rows imported from nccl-tests (``network_import``) mean the
same: ``algbw = bytes / time`` and the *bus bandwidth* (what the row's ``gbps``
holds) corrects for how much of the data each rank must actually move:

* all_reduce:      busbw = algbw * 2 (n - 1) / n
* all_gather, reduce_scatter, all_to_all: busbw = algbw * (n - 1) / n

where ``bytes`` is the size nccl-tests prints: the full buffer (all_reduce,
all_to_all), the gathered output (all_gather), the input (reduce_scatter).

With a single GPU (or none) this is skipped with a note. The same code runs on
the CPU with the ``gloo`` backend, which is how it is tested.
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import time

OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")


def bus_factor(op: str, ranks: int) -> float:
    if ranks <= 1:
        return 1.0
    if op == "all_reduce":
        return 2.0 * (ranks - 1) / ranks
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return (ranks - 1) / ranks
    return 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, backend: str, port: int, sizes, ops, reps: int, out_path: str):
    """One rank: time each op at each size; rank 0 writes the medians as JSON."""
    import json

    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = backend == "nccl"
    if cuda:
        torch.cuda.set_device(rank)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    dist.init_process_group(backend, rank=rank, world_size=world)
    results = []
    try:
        for op in ops:
            for nbytes in sizes:
                numel = max(world, nbytes // 4 // world * world)  # float32, divisible by world
                x = torch.randn(numel, device=device)
                if op == "all_reduce":
                    call = lambda: dist.all_reduce(x)  # noqa: E731
                elif op == "all_gather":
                    shard = x[: numel // world].clone()
                    call = lambda: dist.all_gather_into_tensor(x, shard)  # noqa: E731
                elif op == "reduce_scatter":
                    shard = x[: numel // world].clone()
                    call = lambda: dist.reduce_scatter_tensor(shard, x)  # noqa: E731
                else:
                    y = torch.empty_like(x)
                    call = lambda: dist.all_to_all_single(y, x)  # noqa: E731
                for _ in range(2):
                    call()
                samples = []
                for _ in range(reps):
                    if cuda:
                        torch.cuda.synchronize()
                    dist.barrier()
                    t0 = time.perf_counter()
                    call()
                    if cuda:
                        torch.cuda.synchronize()
                    samples.append(time.perf_counter() - t0)
                # The slowest rank defines the collective's time.
                med = torch.tensor([statistics.median(samples)], device=device)
                dist.all_reduce(med, op=dist.ReduceOp.MAX)
                results.append({"op": op, "bytes": numel * 4, "seconds": float(med.item())})
    finally:
        dist.destroy_process_group()
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)


def measure(world: int, sizes, ops=OPS, backend: str = "nccl", reps: int = 10, link: str = "intranode") -> list[dict]:
    """``collectives`` rows from ``world`` spawned ranks (``nccl`` on GPUs, ``gloo`` on CPU)."""
    import json

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "collectives.json")
        mp.spawn(_worker, args=(world, backend, _free_port(), list(sizes), list(ops), reps, out_path),
                 nprocs=world, join=True)
        with open(out_path) as f:
            raw = json.load(f)
    rows = []
    for r in raw:
        algbw = r["bytes"] / r["seconds"] / 1e9
        busbw = algbw * bus_factor(r["op"], world)
        if busbw <= 0:
            continue
        rows.append({"op": r["op"], "ranks": world, "bytes": r["bytes"], "gbps": float(f"{busbw:.6g}"),
                     "algbw_gbps": float(f"{algbw:.6g}"), "ms": float(f"{r['seconds'] * 1e3:.6g}"),
                     "link": link, "variant": f"torch.distributed-{backend}", "source": "measured"})
    return rows


def measure_on_gpus(ctx, sizes) -> list[dict]:
    """All visible GPUs, NCCL; [] with a note when fewer than two."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return []
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not ctx.is_cuda or n < 2:
        ctx.note(f"collectives: skipped ({n} GPU{'s' if n != 1 else ''} visible; needs at least 2)")
        return []
    if not torch.distributed.is_available() or not torch.distributed.is_nccl_available():  # pragma: no cover
        ctx.note("collectives: skipped (torch.distributed with NCCL not available)")
        return []
    return measure(n, sizes, backend="nccl", reps=5 if ctx.quick else 20)  # pragma: no cover
