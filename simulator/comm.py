"""Communication times: MoE all-to-all, pipeline P2P, ring collectives.

Bandwidths come from the cluster (usable GB/s per GPU per direction) scaled by
the *efficiency* a profile measured for that collective: a DeepEP row saying
dispatch ran at 46 GB/s on a 50 GB/s NIC means 92% of the link, so halving the
link halves the achieved rate. Without profile rows the link's nominal rate is
used (roofline) and the timer's warnings say so. Where the profile's rows carry
message sizes (imported nccl-tests tables), a collective of a given size runs at
that size's share of the asymptotic bus bandwidth (``Profile.collective_size_factor``).

All-to-all (DeepEP normal kernels, V3 sec 3.2.2): a token crosses IB once per
distinct remote node holding one of its experts (node-limited routing caps
that at M nodes), then NVLink inside the node; IB and NVLink stages pipeline,
so the time is set by the slower of the two.
"""

from __future__ import annotations

import math

from .config import ClusterConfig
from .profile import Profile
from .workload import Op

GB = 1e9

# Collectives that run the same ring steps (see CommModel._efficiency); "tp" is Megatron's TP traffic.
RING_FAMILY = {
    "tp": ("all_reduce", "reduce_scatter", "all_gather"),
    "all_reduce": ("reduce_scatter", "all_gather"),
    "reduce_scatter": ("all_reduce", "all_gather"),
    "all_gather": ("all_reduce", "reduce_scatter"),
}


def all_to_all_row(transport: str, direction: str) -> str:
    """Profile row of an all-to-all: DeepEP kernels are profiled per direction (dispatch,
    combine); an NCCL all-to-all is one collective."""
    return "all_to_all" if transport == "nccl" else "all_to_all_" + direction


class CommModel:
    def __init__(self, cluster: ClusterConfig, profile: Profile | None, warnings: dict[str, str] | None = None):
        self.c = cluster
        self.profile = profile
        self.warnings = warnings if warnings is not None else {}
        self._eff: dict[tuple, float] = {}
        self._size: dict[tuple, float] = {}
        self._tp: str | None = None
        if profile is not None and profile.data.get("collectives_from"):
            self.warnings.setdefault("network:collectives_from", (
                f"profile {profile.name} has no collectives rows (measured on one GPU): the network's "
                f"are profile {profile.data['collectives_from']}'s"))

    def _rows(self, op: str, link: str) -> list[dict]:
        if self.profile is None:
            return []
        return [r for r in self.profile.tables.get("collectives", []) if r["op"] == op and r.get("link", link) == link]

    def _efficiency(self, op: str, ranks: int, link: str) -> float:
        """Fraction of the nominal link rate a collective achieved in the profile.

        A ring all-reduce *is* a reduce-scatter followed by an all-gather over the same ring, and
        Megatron's TP collectives are these three; nccl-tests' bus bandwidth is defined so that all
        three move the same bytes per link. So when one of them was not measured on a link, another
        one's bus bandwidth stands in (said in the warnings), before falling back to the nominal rate.
        """
        key = (op, ranks, link)
        if key in self._eff:
            return self._eff[key]
        eff = 1.0
        rows = self._rows(op, link)
        if not rows:
            for alt in RING_FAMILY.get(op, ()):
                if self._rows(alt, link):
                    self.warnings.setdefault(f"family:{op}:{link}",
                                             f"no measured {op} over {link}: the measured {alt} bus bandwidth used")
                    eff = self._eff[key] = self._efficiency(alt, ranks, link)
                    return eff
        if rows:
            res = self.profile.collective_gbps(op, ranks) if self.profile else None
            nominal = [r.get("link_gbps") for r in rows if r.get("link_gbps")]
            if res is not None and res.value and nominal:
                eff = min(1.0, res.value / (sum(nominal) / len(nominal)))
                if res.status == "clamped":
                    self.warnings.setdefault(f"clamped:{op}", f"{op} at {ranks} ranks outside the measured range; nearest rows used")
        else:
            self.warnings.setdefault(f"roofline:{op}:{link}", f"no measured {op} over {link}: nominal link bandwidth used")
        self._eff[key] = eff
        return eff

    def size_factor(self, op: str, ranks: int, nbytes: float) -> tuple[float, bool]:
        """(fraction of the asymptotic bus bandwidth a collective of ``nbytes`` reaches, whether the
        profile measured it by size). ``nbytes`` is nccl-tests' size, the whole buffer. A measured
        curve already holds the latency, so callers add none on top of it. Memoized per eighth of a
        power of two: plan search asks for the same sizes often."""
        if self.profile is None or nbytes <= 0:
            return 1.0, False
        key = (op, ranks, round(math.log2(nbytes) * 8))
        hit = self._size.get(key)
        if hit is None:
            res = self.profile.collective_size_factor(op, ranks, nbytes)
            hit = self._size[key] = (res.value or 1.0, res.status != "roofline")
        return hit

    def ib(self, op: str, ranks: int) -> float:
        return self.c.ib_gbps * GB * self._efficiency(op, ranks, "ib")

    def nvlink(self, op: str, ranks: int) -> float:
        return self.c.nvlink_gbps * GB * self._efficiency(op, ranks, "nvlink")

    def a2a_nic_time(self, ib_bytes: float, transport: str, ep: int) -> float:
        """Seconds an all-to-all's IB bytes hold the NIC alone, at the dispatch row's rate for both directions
        (as the DES sends them): what the DP stream's and the P2P sends' NIC parts share the NIC with. Its
        NVLink leg and latency, also in the all-to-all's time, are not on the NIC."""
        return ib_bytes / self.ib(all_to_all_row(transport, "dispatch"), ep) if ib_bytes else 0.0

    def all_to_all(self, op: Op, ep: int) -> tuple[float, float, float]:
        """(seconds, IB bytes, NVLink bytes) of one dispatch or combine on one GPU.

        ``op.comm_bytes`` is bytes per token times tokens; ``op.m`` and ``op.n`` are the
        IB and NVLink copies per token (see workload.dispatch_traffic).
        """
        name = all_to_all_row(op.transport, op.comm)
        ib_bytes = op.comm_bytes * op.m
        nvl_bytes = op.comm_bytes * op.n
        t_ib = ib_bytes / self.ib(name, ep) if ib_bytes else 0.0
        t_nvl = nvl_bytes / self.nvlink(name, min(ep, self.c.gpus_per_node)) if nvl_bytes else 0.0
        lat = (self.c.ib_latency_us if ib_bytes else self.c.nvlink_latency_us) * 1e-6
        return max(t_ib, t_nvl) + lat, ib_bytes, nvl_bytes

    def p2p(self, nbytes: float, cross_node: bool) -> float:
        if cross_node:
            return nbytes / self.ib("p2p", 2) + self.c.ib_latency_us * 1e-6
        return nbytes / self.nvlink("p2p", 2) + self.c.nvlink_latency_us * 1e-6

    def ring_members_per_node(self, ranks: int, stride: int) -> int:
        """Members of a group of ``ranks`` spaced ``stride`` apart in rank order that share a node."""
        return max(1, min(ranks, self.c.gpus_per_node // max(1, stride)))

    def _ring_rate(self, kind: str, ranks: int, stride: int) -> tuple[float, bool]:
        """(seconds per byte of ring volume, whether the NICs rather than NVLink bound it); see :meth:`ring`."""
        k = self.ring_members_per_node(ranks, stride)
        if ranks <= k:
            return 1 / self.nvlink(kind, ranks), False
        nic = 1 / (k * self.ib(kind, ranks))
        nvl = (k - 1) / k / self.nvlink(kind, k) if k > 1 else 0.0
        return max(nic, nvl), nic >= nvl

    def ring_on_nic(self, kind: str, ranks: int, stride: int) -> bool:
        """Whether the NICs, not NVLink, bound a ring collective of this group (see :meth:`ring`)."""
        return self._ring_rate(kind, ranks, stride)[1]

    def ring(self, kind: str, nbytes: float, ranks: int, stride: int = 1) -> float:
        """Seconds of a ring collective; :meth:`ring_part` says what bounds it and how."""
        return self.ring_part(kind, nbytes, ranks, stride)[0]

    def ring_part(self, kind: str, nbytes: float, ranks: int, stride: int = 1) -> tuple[float, bool]:
        """(seconds, whether the NICs rather than NVLink bound it) of a ring all_reduce /
        reduce_scatter / all_gather of ``nbytes`` (the full buffer) over a group of ``ranks`` GPUs
        spaced ``stride`` apart in rank order (a DP group's stride is the TP size).

        Inside one node the ring runs at NVLink's bus bandwidth. Across nodes NCCL lays its rings
        (channels) over all the node's NICs, and each ring leaves a node once: with k members of the
        group on a node, each on its own NIC (rail-optimized nodes), a GPU's NIC carries 1/k of its
        ring traffic and NVLink the other (k-1)/k. So the bus bandwidth is k NICs' worth, unless
        NVLink caps it: NVIDIA measures 192 GB/s all-reduce bus bandwidth on a DGX-A100 with
        8x200 Gb/s NICs (24 GB/s each; NVIDIA/nccl#812), and "with ring, the busbw reflects the
        total NIC bandwidth" of a node (sjeaugey, NVIDIA/nccl-tests#160)."""
        if ranks <= 1 or nbytes <= 0:
            return 0.0, False
        factor = 2.0 if kind == "all_reduce" else 1.0
        volume = factor * (ranks - 1) / ranks * nbytes
        f, sized = self.size_factor(kind, ranks, nbytes)
        rate, on_nic = self._ring_rate(kind, ranks, stride)
        cross_node = self.group_crosses_nodes(ranks, stride)
        lat = 0.0 if sized else (self.c.ib_latency_us if cross_node else self.c.nvlink_latency_us) * 1e-6 * (ranks - 1) * factor
        return volume * rate / f + lat, on_nic

    def _tp_row(self) -> str:
        """The measured collective Megatron's TP traffic is timed by (see RING_FAMILY)."""
        if self._tp is None:
            self._tp = next((op for op in ("tp",) + RING_FAMILY["tp"] if self._rows(op, "nvlink")), "tp")
        return self._tp

    def group_crosses_nodes(self, size: int, stride: int) -> bool:
        """Whether a group of ``size`` ranks spaced ``stride`` apart spans several nodes."""
        return size > self.ring_members_per_node(size, stride)

    def op_time(self, op: Op, ep: int, tp: int, cp: int) -> float:
        if op.comm in ("dispatch", "combine"):
            return self.all_to_all(op, ep)[0]
        if op.comm == "tp":
            # comm_bytes is what one GPU moves, (tp-1)/tp of the buffer nccl-tests would call the size
            f, sized = self.size_factor(self._tp_row(), tp, op.comm_bytes * tp / max(tp - 1, 1))
            return op.comm_bytes / (self.nvlink("tp", tp) * f) + (0.0 if sized else self.c.nvlink_latency_us * 1e-6)
        if op.comm == "cp":
            cross = self.group_crosses_nodes(cp, tp)
            bw = self.ib("cp", cp) if cross else self.nvlink("cp", cp)
            return op.comm_bytes / bw
        raise ValueError(f"unknown communication kind {op.comm!r}")
