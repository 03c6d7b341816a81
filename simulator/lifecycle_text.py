"""The whole-run cost as text: a table laid out like DeepSeek-V3's Table 1.

One row per column of the published table (pre-training, context extension,
post-training), predicted beside published with the error, the phases of a
column indented under it when there are several, and the total. Below it, each
modelled phase whose plan differs from the headline plan is described (plan,
step, memory), so that a figure is never shown without what produced it.
"""

from __future__ import annotations


def _num(x: float | None) -> str:
    return f"{x:,.0f}" if x else "-"


def _err(col: dict) -> str:
    if col.get("error") is not None:
        return f"{100 * col['error']:+.1f} %"
    return "given" if col.get("published_gpu_hours") and not col.get("modelled", True) else ""


def plan_text(plan: dict, microbatches: int | None = None) -> str:
    """A report's plan dict (``report(...)["plan"]``, DP resolved) in the CLI's one-line form."""
    vpp = f" vpp{plan['vpp']}" if plan.get("vpp", 1) > 1 else ""
    # DualPipe's P2P sent once each pair has ended (plan.dualpipe_sends), not inside it as V3's report draws
    sends = " (P2P after each pair)" if (plan.get("dualpipe_sends") == "after_pair" and plan.get("ep_overlap") != "off"
                                        and plan["schedule"] in ("dualpipe", "dualpipev")) else ""
    mbs = f", {microbatches} micro-batches" if microbatches else ""
    return (f"TP{plan['tp']} PP{plan['pp']} EP{plan['ep']} DP{plan['dp']} CP{plan['cp']} {plan['schedule']}{vpp}{sends}, "
            f"micro-batch {plan['micro_batch']}{mbs}, ZeRO-{plan['zero']}, {plan['precision']}, "
            f"recompute {plan['recompute']}, attention {plan['attention_kernel']}")


def run_table_lines(run: dict, headline_plan: dict | None = None) -> list[str]:
    """The run's cost table and the phases' plans, as lines to print."""
    head = ("GPU-hours", "predicted", "published", "error", "USD")
    rows = []
    by_name = {ph["name"]: ph for ph in run["phases"]}
    for col in run["table"]:
        rows.append((col["column"], _num(col["gpu_hours"]), _num(col["published_gpu_hours"]), _err(col),
                     f"${col['usd']:,.0f}"))
        if len(col["phases"]) > 1:
            for name in col["phases"]:
                ph = by_name[name]
                rows.append((f"  {name}", _num(ph["gpu_hours"]), "", "", f"${ph['usd']:,.0f}"))
    total_err = f"{100 * run['total_error']:+.1f} %" if run.get("total_error") is not None else ""
    rows.append(("total", _num(run["total_gpu_hours"]), _num(run.get("published_total_gpu_hours")), total_err,
                 f"${run['total_usd']:,.0f}"))
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    fmt = "  {:<{}}  {:>{}}  {:>{}}  {:>{}}  {:>{}}"
    lines = [fmt.format(*[x for pair in zip(r, widths) for x in pair]) for r in [head] + rows]
    for ph in run["phases"]:
        if not ph.get("modelled") or "plan" not in ph or ph["plan"] == headline_plan:
            continue
        fits = "fits" if ph["fits_in_memory"] else "DOES NOT FIT"
        lines.append(f"  phase {ph['name']}: seq {ph['seq_len']:,}, batch {ph['global_batch']:,}, "
                     f"{plan_text(ph['plan'])}; step {ph['step_time_s']:.3f} s, MFU {100 * ph['mfu']:.1f} %, "
                     f"peak memory {ph['peak_memory_gib']:.1f} GiB ({fits})")
    return lines
