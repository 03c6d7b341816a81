"""Plan search: exact against brute force, same answer on Dask, CLI schema and input errors."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json

import pytest

from simulator.api import load, predict, run_cost
from simulator.cli import main
from simulator.errors import ConfigError
from simulator.search import DEFAULT_SPACE, MAX_TOP, candidates, default_cp, plan_of, search

SPACE = {
    "tp": (1, 2), "pp": (1, 2), "cp": (1,), "micro_batch": (1, 2), "recompute": ("none", "full"),
    "zero": (1, 3), "comm_sms": (12, 20), "schedule": (("1f1b", 1), ("zb1p", 1), ("dualpipe", 1)),
}
GPUS = 16


@pytest.fixture(scope="module")
def sc():
    return load("deepseekmoe-2b")


@pytest.fixture(scope="module")
def result(sc):
    return search(sc, GPUS, top=3, space=SPACE, workers=1, des=False)


def brute_force(sc, objective_key="gpu_hours_per_trillion_tokens"):
    base = dataclasses.replace(sc, cluster=dataclasses.replace(sc.cluster, num_gpus=GPUS))
    best = None
    m = sc.model
    eps = [e for e in range(1, m.n_routed_experts + 1) if m.n_routed_experts % e == 0]
    for tp, pp, cp, ep, (sch, vpp), mb, rc, z, sms in itertools.product(
            SPACE["tp"], SPACE["pp"], SPACE["cp"], eps, SPACE["schedule"], SPACE["micro_batch"],
            SPACE["recompute"], SPACE["zero"], SPACE["comm_sms"]):
        plan = dataclasses.replace(sc.plan, dp=0, tp=tp, sp=tp > 1, pp=pp, cp=cp, ep=ep, schedule=sch, vpp=vpp,
                                   micro_batch=mb, recompute=rc, zero=z, comm_sms=sms)
        try:
            cand = dataclasses.replace(base, plan=plan).validate()
        except ConfigError:
            continue
        pred = predict(cand)
        if not pred.fits_in_memory:
            continue
        v = pred.gpu_hours_per_trillion_tokens
        if best is None or v < best[0] - 1e-9:
            best = (v, cand.plan)
    return best


def test_search_matches_brute_force(sc, result):
    value, plan = brute_force(sc)
    top = result.plans[0]
    assert top["gpu_hours_per_trillion_tokens"] == pytest.approx(value, rel=1e-9)
    # ranked best first, ranks 1..K
    vals = [p["gpu_hours_per_trillion_tokens"] for p in result.plans]
    assert vals == sorted(vals) and [p["rank"] for p in result.plans] == [1, 2, 3]
    assert result.evaluated >= result.valid > 0


def test_ranked_rows_repredict_to_their_ranking():
    # A TP>1 row must come back with the plan it was ranked with (sequence parallelism included).
    sc = load("deepseekmoe-2b", ["cluster.num_gpus=16"])
    res = search(sc, GPUS, top=3, space={**SPACE, "tp": (2,)}, workers=1, des=False)
    assert res.rows
    for row in res.rows[:3]:
        cand = plan_of(sc, row)
        assert cand.plan.tp == 2 and cand.plan.sp
        pred = predict(cand)
        assert pred.gpu_hours_per_trillion_tokens == pytest.approx(row["gpu_hours_per_trillion_tokens"], rel=1e-9)
        assert pred.fits_in_memory == row["fits_in_memory"]


def test_dask_gives_same_best_plan(sc, result):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        res = search(sc, GPUS, top=3, space=SPACE, scheduler=cluster.scheduler_address, des=False)
    assert res.plans[0]["plan"] == result.plans[0]["plan"]
    assert res.evaluated == result.evaluated and res.valid == result.valid


def test_cli_json_schema(capsys, tmp_path):
    out = tmp_path / "plans.csv"
    rc = main(["search", "deepseekmoe-2b", "--gpus", "16", "--top", "3", "--json", "--workers", "1",
               "--no-progress", "--out", str(out), "--set", "plan.comm_sms=16"])
    assert rc == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # exactly one object
    assert set(doc) >= {"plans", "evaluated", "valid", "seconds", "plans_per_second", "des"}
    assert len(doc["plans"]) == 3
    first = doc["plans"][0]
    assert first["rank"] == 1 and isinstance(first["plan"], dict)
    for k in ("step_time_s", "gpu_hours_per_trillion_tokens", "mfu", "peak_memory_gib", "fits_in_memory", "des"):
        assert k in first
    assert first["fits_in_memory"] is True
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == doc["valid"] and rows[0]["rank"] == "1"
    # The communication SMs each plan was timed with are in both, the scenario's own (not varied).
    assert {p["plan"]["comm_sms"] for p in doc["plans"]} == {16} and {r["comm_sms"] for r in rows} == {"16"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".search-")]  # no temp file left


@pytest.mark.parametrize("argv", [
    ["--objective", "foo"], ["--gpus", "0"], ["--gpus", "12"], ["--top", "0"], ["--out", "x.txt"],
    # no plan at all for 7 GPUs: --json used to print an empty ranking and exit 0, the text a header first
    ["--gpus", "7", "--json"], ["--gpus", "7"],
    ["--out", ""],  # used to be taken as no --out: nothing written, exit 0
])
def test_bad_input_exit_2_one_line(capsys, argv):
    args = ["search", "deepseekmoe-2b", "--gpus", "16", "--no-progress", *argv]
    rc = main(args)
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert rc == 2 and cap.out == ""
    assert len(err.splitlines()) == 1 and err.startswith("gpuhours: error:")
    assert ("--gpus" if "7" in argv else "--out" if "" in argv else "") in err


@pytest.mark.parametrize("top", ["100000", "101", "0", "-3"])
def test_top_is_bounded_before_any_plan_is_timed(capsys, monkeypatch, top):
    """Each plan shown is re-simulated with the DES (~0.5 s apiece on V3), so --top 100000 ran for hours
    on every plan that fits. Refused before enumerating; --out is the way to every plan."""
    import simulator.search

    def never(*a, **k):
        raise AssertionError("plans enumerated despite a bad --top")

    monkeypatch.setattr(simulator.search, "candidates", never)
    rc = main(["search", "deepseekmoe-2b", "--gpus", "16", "--no-progress", "--top", top])
    cap = capsys.readouterr()
    assert rc == 2 and cap.out == "" and cap.err.count("\n") == 1
    assert cap.err.startswith(f"gpuhours: error: --top: {top} is out of range"), cap.err
    assert f"allowed: 1 .. {simulator.search.MAX_TOP}; --out writes every plan" in cap.err


def test_default_space_keeps_the_scenarios_comm_sms():
    """The all-to-all's time does not depend on the SMs its kernels hold (the profile's DeepEP rates were
    measured at 20 SMs), while compute keeps the SMs they leave: a search over SM counts always took the
    fewest, flattering every overlapped plan by 4-5 %. The default space keeps the scenario's own."""
    sc = load("deepseek-v2-lite", ["plan.comm_sms=16"])  # 64 experts: EP > 1 on 16 GPUs
    narrow = {"tp": (1,), "pp": (1, 2), "micro_batch": (1,), "recompute": ("none",), "zero": (1,)}
    res = search(sc, GPUS, top=1, space=narrow, workers=1, des=False)
    overlapped = [r for r in res.rows if plan_of(sc, r).ep_overlapped]
    assert overlapped, "the case must hold plans that overlap the all-to-all, or it proves nothing"
    assert {r["comm_sms"] for r in res.rows} == {16}
    plans, _, _ = candidates(sc, GPUS)  # the whole default space too
    assert plans and {p.comm_sms for p in plans} == {16}
    assert DEFAULT_SPACE["comm_sms"] == ()
    # A space that names SM counts still varies them, for overlapped plans only.
    varied = search(sc, GPUS, top=1, space={**narrow, "comm_sms": (12, 20)}, workers=1, des=False)
    by = {}
    for r in varied.rows:
        by.setdefault(plan_of(sc, r).ep_overlapped, set()).add(r["comm_sms"])
    assert by == {True: {12, 20}, False: {16}}


@pytest.mark.parametrize("overlap", ["auto", "off", "on"])
def test_enumerated_plans_are_distinct(overlap):
    """SM counts multiply only the plans that overlap the all-to-all, by the scenario's own rule
    (plan.ep_overlap): with off, DualPipe held no SMs and its plans came back once per SM count; with
    on, interleaved plans overlap and are varied. No two candidates may be the same plan."""
    # the preset's own PP4 1F1B cannot overlap (Megatron-LM needs virtual stages): a DualPipe scenario
    sc = load("deepseek-v2-lite", ["plan.schedule=dualpipe", f"plan.ep_overlap={overlap}"])
    space = {"tp": (1, 1, 2), "pp": (1, 2, 4), "micro_batch": (1,), "recompute": ("none", "full"), "zero": (1,),
             "comm_sms": (12, 20, 20, 24)}  # values repeated on purpose
    plans, enumerated, pruned = candidates(sc, GPUS, space)
    assert plans and len(set(plans)) == len(plans) and enumerated == len(plans) + pruned
    base = dataclasses.replace(sc, cluster=dataclasses.replace(sc.cluster, num_gpus=GPUS))
    varied = {p.schedule for p in plans if p.comm_sms != sc.plan.comm_sms}
    for p in plans:
        if p.comm_sms != sc.plan.comm_sms:
            assert dataclasses.replace(base, plan=p).ep_overlapped, p
    assert varied == {"auto": {"dualpipe", "dualpipev"}, "off": set(),
                      "on": {"dualpipe", "dualpipev", "interleaved", "1f1b"}}[overlap]


def test_candidates_check_the_plan_as_a_whole_check_would(monkeypatch):
    """candidates() checks the unchanged parts once and each candidate's plan against them
    (Scenario.validate_plan); it must keep and prune exactly the plans the whole check would, and where
    the cluster itself fails its check (here 12 GPUs on 8-GPU nodes) prune them all, as before."""
    import simulator.search

    sc = load("deepseek-v2-lite", ["training.global_batch=64"])  # micro-batch 3 and DualPipe's 2 x PP fail together
    space = {"tp": (1, 2), "pp": (1, 2, 4), "micro_batch": (1, 3, 4), "recompute": ("none", "full"), "zero": (0, 3)}
    runs = []
    for gpus in (GPUS, 12):
        fast = candidates(sc, gpus, space)
        with monkeypatch.context() as mp:  # every candidate through the whole check
            mp.setattr(simulator.search.Scenario, "validate_plan", simulator.search.Scenario.validate)
            whole = candidates(sc, gpus, space)
        assert fast == whole
        runs.append(fast)
    (kept, _, pruned), (none, enumerated, all_pruned) = runs
    assert kept and pruned, "the case must keep some plans and prune others, or it proves nothing"
    try:
        dataclasses.replace(sc.cluster, num_gpus=12).validate()
        cluster_fails = False
    except ConfigError:
        cluster_fails = True
    assert cluster_fails and none == [] and enumerated == all_pruned > 0


def test_default_space_holds_the_scenario_plan_and_load_for_search_lets_it_not_fit():
    """The default space adds the scenario's own values (Llama 3 405B's interleaved x8), so the best plan is
    never dearer than the plan the search starts from; a dimension the caller names is searched as named.
    ``load_for_search`` returns a scenario whose searched fields do not fit its GPUs (the CLI's
    ``--set cluster.num_gpus=16384`` stopped there), and raises any other error as ``load`` does."""
    from simulator.api import load_for_search

    sc = load("llama3-405b")
    plans, _, _ = candidates(sc, sc.cluster.num_gpus)
    assert sc.plan in plans
    res = search(sc, sc.cluster.num_gpus, top=1, workers=1, des=False)
    assert res.plans[0]["gpu_hours_per_trillion_tokens"] <= predict(sc).gpu_hours_per_trillion_tokens
    named, _, _ = candidates(sc, sc.cluster.num_gpus, {"schedule": (("interleaved", 2),)})
    assert {p.vpp for p in named} == {2}
    with pytest.raises(ConfigError) as e:
        load("deepseek-v3", ["cluster.num_gpus=16384"])
    assert e.value.field == "plan.micro_batch"
    big = load_for_search("deepseek-v3", ["cluster.num_gpus=16384"])
    assert big.cluster.num_gpus == 16384 and big.plan == load("deepseek-v3").plan
    assert search(big, 16384, top=1, space={"pp": (8,), "micro_batch": (1,), "recompute": ("none",), "zero": (1,)},
                  workers=1, des=False).plans
    with pytest.raises(ConfigError) as e:  # not a searched field: the scenario is wrong whatever the plan
        load_for_search("deepseek-v3", ["plan.attention_kernel=unfused"])  # MLA has no unfused core
    assert e.value.field == "plan.attention_kernel"


def test_cli_search_at_a_gpu_count_the_scenario_plan_does_not_fit(capsys):
    assert main(["search", "deepseekmoe-2b", "--set", "cluster.num_gpus=1024", "--gpus", "1024", "--top", "1",
                 "--workers", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plans"]


def test_default_cp_widens_with_the_sequence():
    """CP up to the degree that leaves each rank 8K tokens (Llama 3's 128K stage ran CP16), never below
    CP2: a 128K phase capped at CP2 found plans 1.5x dearer than the lifecycle's own CP4 plan."""
    assert default_cp(4096) == (1, 2)  # V3 pre-training: the space as it was
    assert default_cp(32768) == (1, 2, 4)
    assert default_cp(131072) == (1, 2, 4, 8, 16)
    sc = load("deepseekmoe-2b", ["training.seq_len=65536", "training.global_batch=64", "plan.micro_batch=1"])
    narrow = {"tp": (1,), "pp": (1,), "micro_batch": (1,), "recompute": ("none",), "zero": (1,)}
    plans, _, _ = candidates(sc, 64, narrow)
    assert {p.cp for p in plans} == {1, 2, 4, 8}
    given, _, _ = candidates(sc, 64, {**narrow, "cp": (16,)})  # a CP the user names is enumerated as given
    assert {p.cp for p in given} == {16}
    short, _, _ = candidates(load("deepseekmoe-2b"), GPUS, narrow)
    assert {p.cp for p in short} == {1, 2}


def test_top_at_its_bound_is_accepted(sc):
    res = search(sc, GPUS, top=MAX_TOP, space=SPACE, workers=1, des=False)
    assert len(res.plans) == min(MAX_TOP, res.valid) and res.valid > 0


def test_parquet_needs_pyarrow(capsys, tmp_path):
    try:
        import pyarrow  # noqa: F401
    except ModuleNotFoundError:
        rc = main(["search", "deepseekmoe-2b", "--gpus", "16", "--no-progress", "--out", str(tmp_path / "p.parquet")])
        assert rc == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
        assert not (tmp_path / "p.parquet").exists()
        return
    rc = main(["search", "deepseekmoe-2b", "--gpus", "16", "--no-progress", "--workers", "1", "--json",
               "--out", str(tmp_path / "p.parquet")])
    assert rc == 0 and (tmp_path / "p.parquet").stat().st_size > 0


def test_v3_lifecycle_phases(capsys):
    rc = main(["predict", "deepseek-v3-lifecycle", "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    names = [p["name"] for p in doc["phases"]]
    assert names == ["pre-training", "context-32k", "context-128k", "post-training"]
    for p in doc["phases"]:
        assert p["gpu_hours"] > 0 and p["usd"] == pytest.approx(2.0 * p["gpu_hours"])
    assert doc["total_gpu_hours"] == pytest.approx(sum(p["gpu_hours"] for p in doc["phases"]))
    by = {p["name"]: p for p in doc["phases"]}
    assert by["post-training"]["gpu_hours"] == 5000
    # Published (V3 Table 1): 2664K pre-training, 119K for both extension stages together.
    ext_pub = (by["context-32k"]["published_gpu_hours"] or 0) + (by["context-128k"]["published_gpu_hours"] or 0)
    assert ext_pub == pytest.approx(119000)
    ext = by["context-32k"]["gpu_hours"] + by["context-128k"]["gpu_hours"]
    assert 0.25 < ext / ext_pub < 4
    assert 0.5 < by["pre-training"]["gpu_hours"] / 2664000 < 2
    run = run_cost(load("deepseek-v3-lifecycle"))
    assert run["total_gpu_hours"] == pytest.approx(doc["total_gpu_hours"])
    # Table 1's columns: the published 119K is compared with both extension stages together.
    cols = {c["column"]: c for c in doc["table"]}
    assert list(cols) == ["pre-training", "context extension", "post-training"]
    assert cols["context extension"]["phases"] == ["context-32k", "context-128k"]
    assert cols["context extension"]["error"] == pytest.approx(ext / 119000 - 1)
    assert cols["post-training"]["error"] is None  # given, not predicted
    assert doc["published_total_gpu_hours"] == 2788000
    assert doc["total_error"] == pytest.approx(doc["total_gpu_hours"] / 2788000 - 1)
    # Each modelled phase says what produced its figure.
    assert by["context-128k"]["plan"]["tp"] == 8 and by["context-128k"]["fits_in_memory"] is True
    assert any("seq=131072" in w for w in by["context-128k"]["warnings"])


def test_v3_lifecycle_text_is_laid_out_like_table_1(capsys):
    assert main(["predict", "deepseek-v3-lifecycle"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:4] == ["GPU-hours", "predicted", "published", "error"])
    first = [ln.split()[0] for ln in lines[head + 1:head + 7]]
    assert first == ["pre-training", "context", "context-32k", "context-128k", "post-training", "total"]
    assert "2,788,000" in lines[head + 6] and "%" in lines[head + 6]
    assert "phase context-128k: seq 131,072" in out and "TP8 PP2" in out
    assert "[context-128k]" in err  # the phase's own warnings, named with it
    # The ramp's first segment asks for 3,840 sequences; PP16 DualPipe over 128 replicas runs no fewer than 4,096.
    assert ("warning: [pre-training] batch ramp lifted: 1 of 8 segments (3,840 sequences asked) priced at 4,096 "
            "sequences") in err and "dualpipe needs at least 2 x pp = 32 micro-batches" in err


def test_a_lifted_ramp_segment_is_said():
    """A batch-ramp segment smaller than the plan can run is priced at the least batch it runs, and the
    run says so (phase, batch asked, batch used, why), in the phase's warnings and the run's."""
    run = run_cost(load("deepseek-v3-lifecycle"))
    pre = run["phases"][0]
    lifts = [w for w in pre["warnings"] if w.startswith("batch ramp lifted")]
    assert len(lifts) == 1
    assert "(3,840 sequences asked) priced at 4,096 sequences" in lifts[0]
    assert "dp 128 x micro_batch 1 x 32 = 4,096 sequences" in lifts[0]
    assert f"[pre-training] {lifts[0]}" in run["warnings"]
    assert not any("batch ramp lifted" in w for ph in run["phases"][1:] for w in ph.get("warnings", []))
    # A ramp that starts at a batch the plan runs is priced as asked, with nothing to say.
    sc = load("deepseek-v3-lifecycle")
    phases = (dataclasses.replace(sc.training.phases[0], batch_ramp_from=4096), *sc.training.phases[1:])
    quiet = run_cost(dataclasses.replace(sc, training=dataclasses.replace(sc.training, phases=phases)))
    assert not any("batch ramp lifted" in w for w in quiet["warnings"])


def test_valid_batch_rounds_to_the_nearest():
    """The plan's batch step is dp x micro_batch x 2 under DualPipe; the nearest multiple is taken, below
    the batch asked as well as above, and never fewer than 2 x pp micro-batches."""
    from simulator.lifecycle import _least_batch, _valid_batch

    sc = load("deepseek-v3")  # dp 128, micro-batch 1, PP16 DualPipe: steps of 256, at least 4,096
    assert _least_batch(sc)[0] == 4096
    assert _valid_batch(sc, 4900) == 4864 and _valid_batch(sc, 5000) == 5120  # 19.1 and 19.5 steps of 256
    assert _valid_batch(sc, 3840) == 4096 and _valid_batch(sc, 100) == 4096


def test_a_phase_that_does_not_validate_is_named(capsys):
    # 4096 GPUs: the pre-training plan still has 40 micro-batches, the 32K phase's DualPipe only 15.
    assert main(["predict", "deepseek-v3-lifecycle", "--set", "cluster.num_gpus=4096"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpuhours: error: training.phases.context-32k: plan.micro_batch") and err.count("\n") == 1


def test_plans_the_engine_refuses_are_counted_and_shown(sc, monkeypatch, capsys):
    """A plan the analytic engine cannot time is reported (count and message), not dropped unseen."""
    import simulator.analytic as analytic

    real = analytic.predict_analytic

    def refuse_pp2(cand, **kw):
        if cand.plan.pp == 2:
            raise ConfigError("profile.gemm", "no rows for this shape")
        return real(cand, **kw)

    monkeypatch.setattr(analytic, "predict_analytic", refuse_pp2)
    res = search(sc, GPUS, top=1, space=SPACE, workers=1, des=False)
    assert res.failed > 0 and res.errors == ("profile.gemm: no rows for this shape",)
    assert res.valid + res.failed <= res.evaluated and all(r["plan"]["pp"] == 1 for r in res.plans)
    assert res.to_json()["failed"] == res.failed
    assert main(["search", "deepseekmoe-2b", "--gpus", str(GPUS), "--workers", "1", "--no-progress",
                 "--top", "1"]) == 0
    assert "plans could not be timed, e.g.: profile.gemm: no rows" in capsys.readouterr().out


def test_run_total_error_only_when_every_column_is_published():
    """A total compared over some columns would count the unpublished ones as error (12 vs 6: +100 %)."""
    import dataclasses

    sc = load("deepseek-v3-lifecycle")
    phases = tuple(dataclasses.replace(p, published_gpu_hours=0) if p.column == "context extension" else p
                   for p in sc.training.phases)
    run = run_cost(dataclasses.replace(sc, training=dataclasses.replace(sc.training, phases=phases)))
    cols = {c["column"]: c for c in run["table"]}
    assert cols["context extension"]["published_gpu_hours"] is None
    assert cols["pre-training"]["error"] == pytest.approx(cols["pre-training"]["gpu_hours"] / 2664000 - 1)
    assert run["published_total_gpu_hours"] is None and run["total_error"] is None


def test_a_space_read_from_json_may_give_schedules_as_lists():
    from simulator.search import candidates

    sc = load("deepseekmoe-2b")
    plans, _, _ = candidates(sc, 64, {"schedule": [["1f1b", 1], ("1f1b", 1)], "tp": [1], "pp": [1],
                                      "micro_batch": [4], "recompute": ["none"], "zero": [1]})
    assert plans and len({(p.schedule, p.vpp) for p in plans}) == 1


def test_rank_by_des_orders_the_rerun_plans_and_says_where_the_best_differs():
    from simulator.search import rank_by_des

    def row(rank, des):
        return {"rank": rank, "des": des}

    plans = [row(1, {"gpu_hours_per_trillion_tokens": 203.0}), row(2, {"error": "rejected"}),
             row(3, {"gpu_hours_per_trillion_tokens": 198.0}), row(4, None)]
    said = rank_by_des(plans, "gpu_hours")
    assert [p["des_rank"] for p in plans] == [2, None, 1, None]
    assert said == {"analytic_best": 1, "des_best": 3, "gain_pct": pytest.approx(100 * (1 - 198 / 203))}
    agree = [row(1, {"step_time_s": 1.0}), row(2, {"step_time_s": 1.0})]  # a tie keeps the analytic order
    assert rank_by_des(agree, "step_time") is None and [p["des_rank"] for p in agree] == [1, 2]
    assert rank_by_des([row(1, {"gpu_hours_per_trillion_tokens": 1.0})], "gpu_hours") is None


def test_search_cli_gives_the_des_order_of_its_top_plans(capsys, monkeypatch):
    """The DES re-runs the top plans; where it orders them otherwise than the analytic ranking, the table
    says its order (DES #) and a line names its best. Here a stand-in DES reverses the order of three."""
    import simulator.search as search_mod

    calls = []

    def reversed_des(cand, profile):
        calls.append(cand)
        return {"step_time_s": 10.0 - len(calls), "gpu_hours_per_trillion_tokens": 1000.0 - len(calls),
                "usd_per_trillion_tokens": 2000.0 - 2 * len(calls)}

    monkeypatch.setattr(search_mod, "des_available", lambda: True)
    monkeypatch.setattr(search_mod, "des_metrics", reversed_des)
    argv = ["search", "deepseekmoe-2b", "--gpus", "16", "--top", "3", "--workers", "1", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.split()[0].isdigit() and "TP" in ln]
    assert [ln.split()[-1] for ln in lines] == ["3", "2", "1"]
    assert "the DES ranks #3 first: by its figures 0.2 % under #1" in out
    calls.clear()
    assert main(argv + ["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["des_rank"] for p in doc["plans"]] == [3, 2, 1]
    assert doc["des_disagree"]["des_best"] == 3


def test_a_worker_keeps_its_evaluator_from_chunk_to_chunk_and_forgets_the_plans(sc):
    """A search worker reuses one Evaluator over the chunks it runs (the layer timings carry over) but drops
    what it kept per plan between chunks, so it holds one chunk's plans; each chunk's rows are what a fresh
    Evaluator gives."""
    from simulator import search as search_mod
    from simulator.analytic import Evaluator, predict_analytic, resolve_profile

    base = dataclasses.replace(sc, cluster=dataclasses.replace(sc.cluster, num_gpus=GPUS))
    plans = candidates(sc, GPUS, SPACE)[0]
    first, second = plans[: len(plans) // 2], plans[len(plans) // 2:]
    search_mod._EVALUATORS.clear()
    search_mod.evaluate_chunk(base, first)
    (_, ev), = search_mod._EVALUATORS.values()
    assert ev._stages and ev._units  # the first chunk's plans and layer timings, until the next chunk starts
    rows = search_mod.evaluate_chunk(base, second)
    assert [e for _, e in search_mod._EVALUATORS.values()] == [ev]
    fresh = Evaluator(base, resolve_profile(base, None))
    for row, plan in zip(rows, second):
        pred = predict_analytic(dataclasses.replace(base, plan=plan), evaluator=fresh)
        assert row["step_time_s"] == pred.step_time_s and row["peak_memory_gib"] == pred.peak_memory_gib
    # The plans' stage and rank sums are the second chunk's alone; the layer timings the first chunk's too.
    assert set(ev._stages) == set(fresh._stages) and len(ev._rank_times) == len(fresh._rank_times)
    assert set(ev._units) > set(fresh._units)


def test_a_chunk_makes_no_reference_cycles_so_pausing_the_collector_for_it_only_postpones(sc):
    """evaluate_chunk pauses Python's cyclic garbage collector for the chunk. That is safe only if evaluating
    plans, refused ones included, leaves no cyclic garbage behind (reference counting frees everything else
    at once): a collection right after a chunk finds nothing to free, and the collector runs again after it."""
    import gc

    from simulator import search as search_mod

    base = dataclasses.replace(sc, cluster=dataclasses.replace(sc.cluster, num_gpus=GPUS))
    plans = candidates(sc, GPUS, SPACE)[0]
    bad = dataclasses.replace(plans[0], schedule="dualpipe", pp=3)  # refused by the engine: a row
    search_mod._EVALUATORS.clear()
    search_mod.evaluate_chunk(base, plans[:4])  # the first chunk fills the module-level caches
    gc.collect()
    assert gc.isenabled()
    rows = search_mod.evaluate_chunk(base, [bad] + plans)
    assert gc.isenabled()
    assert "error" in rows[0] and all("error" not in r for r in rows[1:])
    assert gc.collect() == 0
    gc.disable()
    try:
        search_mod.evaluate_chunk(base, plans[:2])
    finally:
        assert not gc.isenabled()  # a paused collector stays paused
        gc.enable()
