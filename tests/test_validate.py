"""gpuhours validate: every included row predicted or listed with its reason."""

import json
from pathlib import Path

import pytest

from simulator.cli import main
from simulator.errors import ConfigError
from simulator.scenario import scenario_from_dict
from simulator.validate import DEFAULT_CSV, describe_run, read_csv, row_to_raw, short_source, validate_rows


def test_validate_json_contract(capsys):
    assert main(["validate", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    included = [r for r in read_csv(DEFAULT_CSV) if r["include"] == "true"]
    assert len(out["rows"]) == len(included) == 25
    for r in out["rows"]:
        assert set(("run_id", "predicted", "measured", "error_pct")) <= set(r)
        assert r["error_pct"] is not None or r.get("reason")
    assert out["mape_pct"] > 0


def test_each_modelled_row_says_where_its_predicted_step_goes():
    """The parts of a row's predicted step add up to the step its throughput comes from."""
    from simulator.breakdown import PARTS

    rows = {r["run_id"]: r for r in read_csv(DEFAULT_CSV)}
    results, _ = validate_rows([rows["MLM24-1.7B"], rows["MB2511-QWEN3-30B-A3B"]])
    for res in results:
        assert list(res.step_parts_s) == [k for k, _ in PARTS]
        raw, _ = row_to_raw(rows[res.run_id])
        tokens_per_gpu_step = raw["training"]["global_batch"] * raw["training"]["seq_len"] / raw["cluster"]["num_gpus"]
        assert sum(res.step_parts_s.values()) == pytest.approx(tokens_per_gpu_step / res.predicted)
    mlm, qwen = results
    assert mlm.step_parts_s["expert_gemm"] == 0.0 < qwen.step_parts_s["expert_gemm"]


def test_llama3_rows_compare_mfu():
    rows = [r for r in read_csv(DEFAULT_CSV) if r["run_id"].startswith("LLAMA3")]
    results, _ = validate_rows(rows)
    assert all(r.metric.startswith("MFU") for r in results)


def test_unmodellable_row_listed_with_reason(tmp_path):
    rows = read_csv(DEFAULT_CSV)
    bad = dict(rows[0], run_id="X", gpu="TPU-v5", include="true")
    results, _ = validate_rows([bad])
    assert results[0].error_pct is None and "gpu" in results[0].reason


def test_validate_profile_option(capsys, tmp_path):
    assert main(["validate", "--profile", "no-such-profile"]) == 2
    assert "profile" in capsys.readouterr().err
    # An H100-only CSV validated on the H100 profile predicts the same as the cluster default.
    rows = (Path(__file__).parent / "data" / "public.csv").read_text().splitlines()
    keep = [rows[0]] + [r for r in rows[1:] if r.startswith("MLM24-1.7B,")]
    csv_path = tmp_path / "h100.csv"
    csv_path.write_text("\n".join(keep) + "\n")
    assert main(["validate", "--csv", str(csv_path), "--profile", "h100-published", "--json"]) == 0
    with_profile = json.loads(capsys.readouterr().out)
    assert main(["validate", "--csv", str(csv_path), "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert with_profile["rows"][0]["predicted"] == pytest.approx(default["rows"][0]["predicted"])
    assert main(["validate", "--csv", str(csv_path), "--profile", "a100-published", "--json"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["rows"][0]["predicted"] != pytest.approx(default["rows"][0]["predicted"])


SUPPLEMENTARY = Path(__file__).parent / "data" / "supplementary.csv"
PLAN_FIELDS = ("layers", "hidden", "experts_total", "expert_ffn", "seq_len", "micro_batch", "num_gpus", "tp", "pp", "vpp",
               "ep", "dp", "precision")


def test_supplementary_rows_all_modelled_with_the_same_schema(capsys):
    """The Megatron-Bridge rows kept beside the public set (docs/benchmarks.md) read and predict."""
    assert list(read_csv(SUPPLEMENTARY)[0]) == list(read_csv(DEFAULT_CSV)[0])
    assert main(["validate", "--csv", str(SUPPLEMENTARY), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["rows"]) == 11
    assert all(r["error_pct"] is not None and r["measured"] > 0 for r in out["rows"])


def test_supplementary_ep_overlap_pair_differs_only_in_the_overlap_switch():
    """Megatron-Bridge's A0/A1 smoke pair (PRs #3862/#3868): one plan, all-to-all overlap off then on.
    validate reads the switch from the notes, so the two predictions differ by the overlap alone."""
    rows = {r["run_id"]: r for r in read_csv(SUPPLEMENTARY)}
    off, on = rows["MBPR-QWEN3-30B-NO-OVERLAP"], rows["MBPR-QWEN3-30B-EP-OVERLAP"]
    assert all(off[k] == on[k] for k in PLAN_FIELDS)
    raw_off, raw_on = row_to_raw(off)[0], row_to_raw(on)[0]
    assert raw_off["plan"]["ep_overlap"] == "auto" and raw_on["plan"]["ep_overlap"] == "on"
    assert {**raw_off["plan"], "ep_overlap": "on"} == raw_on["plan"]
    assert raw_on["plan"]["dispatcher"] == "alltoall"
    measured_gain = float(on["tokens_per_s_per_gpu"]) / float(off["tokens_per_s_per_gpu"])
    assert measured_gain == pytest.approx(41.25 / 31.31, rel=1e-3)


def test_supplementary_qwen3_30b_is_the_public_rows_plan_a_release_earlier():
    """Same plan, two releases: the 2x between them is software, not the plan (named in the notes)."""
    pub = {r["run_id"]: r for r in read_csv(DEFAULT_CSV)}["MB2511-QWEN3-30B-A3B"]
    sup = {r["run_id"]: r for r in read_csv(SUPPLEMENTARY)}["MB2509-QWEN3-30B-A3B"]
    assert all(pub[k] == sup[k] for k in PLAN_FIELDS)
    assert float(sup["tokens_per_s_per_gpu"]) / float(pub["tokens_per_s_per_gpu"]) == pytest.approx(1.99, abs=0.01)


def test_megatron_moe_flops_give_megatron_bridges_printed_pairs():
    """Megatron-Bridge prints both model TFLOP/s and tokens/s for its Qwen3 rows; Megatron-LM's own count
    (num_floating_point_operations) must turn one into the other: 121 TFLOP/s <-> 5,275 tokens/s (30B),
    233 <-> 1,575 (235B). A count that dropped the causal half, the logits or the top-k would miss by >5 %."""
    from simulator.validate import megatron_flops_per_token

    pub = {r["run_id"]: r for r in read_csv(DEFAULT_CSV)}
    for rid, tflops, tokens in (("MB2511-QWEN3-30B-A3B", 121, 5275), ("MB2511-QWEN3-235B-A22B", 233, 1575)):
        sc = scenario_from_dict(row_to_raw(pub[rid])[0], name=rid)
        per_token = megatron_flops_per_token(sc.model, sc.training.seq_len)
        assert tflops * 1e12 / per_token == pytest.approx(tokens, rel=0.005)
    # Hand count for Qwen3-30B-A3B at 4096: attention 6(2048*5120 + 4096*4096 + 4096*2048) and routed experts
    # 6*2048*(768*8*3) per layer over 48 layers, plus 6*2048*151936 logits.
    sc = scenario_from_dict(row_to_raw(pub["MB2511-QWEN3-30B-A3B"])[0], name="q")
    assert megatron_flops_per_token(sc.model, 4096) == 48 * (213_909_504 + 226_492_416) + 1_866_989_568


def test_megatron_moe_definition_refuses_mla_with_one_line():
    from simulator import api
    from simulator.validate import mfu_under

    with pytest.raises(ConfigError, match="MLA"):
        mfu_under("megatron-moe model TFLOP/s / 989", api.load("deepseek-v3"), 100.0)


def test_supplementary_megatron_recipes_state_their_switches_in_the_notes():
    """The Megatron-LM MoE recipe rows (PR #5728 figures): the notes carry what the recipes set, and
    validate reads the switches from them; the FP8 row is the BF16 row's plan in FP8."""
    rows = {r["run_id"]: r for r in read_csv(SUPPLEMENTARY)}
    bf16, fp8 = rows["MLMR26-QWEN3-30B-A3B-BF16"], rows["MLMR26-QWEN3-30B-A3B-FP8"]
    assert all(bf16[k] == fp8[k] for k in PLAN_FIELDS if k != "precision")
    plan = {rid: scenario_from_dict(row_to_raw(rows[rid])[0], name=rid).plan for rid in rows if rid.startswith("MLMR26")}
    p16, p8 = plan["MLMR26-QWEN3-30B-A3B-BF16"], plan["MLMR26-QWEN3-30B-A3B-FP8"]
    assert (p16.moment_dtype, p8.moment_dtype) == ("fp32", "bf16")
    assert p16.grad_reduce_overlap and p16.attention_kernel == "cudnn" and p16.dispatcher == "deepep"
    big = plan["MLMR26-QWEN3-235B-A22B-BF16"]
    assert (big.ep_overlap, big.layer_split, big.grad_reduce_overlap, big.vpp) == ("on", "balanced", False, 4)


def test_mfu_divides_by_the_peak_the_definition_states_else_the_rows_gpu():
    from simulator import api
    from simulator.validate import mfu_under

    sc = api.load("llama3-405b")
    base = mfu_under("palm 6N+attn (BF16 MFU, peak 989)", sc, 100.0)
    assert mfu_under("palm 6N+attn (peak 312)", sc, 100.0) == pytest.approx(base * 989 / 312)
    # No peak stated: the BF16 peak of the row's GPU (H100 989.4).
    assert mfu_under("palm 6N+attn", sc, 100.0) == pytest.approx(base * 989 / 989.4)
    mega = mfu_under("megatron-72 no recompute (TFLOP/s / 312)", sc, 100.0)
    assert mega * 312 == pytest.approx(mfu_under("megatron-72 no recompute (TFLOP/s / 989)", sc, 100.0) * 989)


@pytest.mark.parametrize("run_id,description", [
    ("MLM24-1.7B", "dense · 48× H100 · Megatron-LM 2024"),
    ("NAR21-1T", "dense · 3,072× A100 · Narayanan 2021"),
    ("LLAMA3-405B-16384-s131072", "dense · 16,384× H100 · Llama Team 2024"),
    ("MB2511-QWEN3-30B-A3B", "MoE 8/128 · 16× H100 · Megatron-Bridge"),
    ("MB2511-GPTOSS-120B", "MoE 4/128 · 64× H100 · Megatron-Bridge"),
    ("DSV2-236B-H800", "MoE 6/160 · H800 · DeepSeek-AI 2024"),  # the source gives no GPU count
])
def test_a_run_id_is_described_from_its_own_columns(run_id, description):
    """Ids such as MB2511-QWEN3-30B-A3B say little to a reader: model kind, GPUs and source in words."""
    row = next(r for r in read_csv(DEFAULT_CSV) if r["run_id"] == run_id)
    assert describe_run(row) == description


def test_run_descriptions_are_short_and_change_with_their_columns():
    rows = read_csv(DEFAULT_CSV)
    # Short enough to sit beside the id in the dashboard's table (a 260-px column at a 1280-px window).
    assert max(len(describe_run(r)) for r in rows if r["include"] == "true") <= 40
    row = next(r for r in rows if r["run_id"] == "MLM24-1.7B")
    assert describe_run({**row, "num_gpus": "96", "gpu": "A100-80GB"}) == "dense · 96× A100 · Megatron-LM 2024"
    assert describe_run({"run_id": "X"}) == ""  # every column empty: nothing made up


@pytest.mark.parametrize("source,short", [
    ("NVIDIA/Megatron-LM README 2024 'Training Speed and Scalability' (images/model_table.png)", "Megatron-LM 2024"),
    ("Llama Team 'The Llama 3 Herd of Models' (arXiv 2407.21783) Table 4, Sec 3.3.2", "Llama Team 2024"),
    ("NVIDIA-NeMo/Megatron-Bridge docs/performance-summary.md, 25.09 NeMo Container", "Megatron-Bridge"),
    ("NVIDIA-NeMo/Megatron-Bridge PR #3862 ('docs: Record MoE overlap smoke results', 2026-05-16)",
     "Megatron-Bridge PR #3862"),
    ("Smith et al. 'A Title' (arXiv:2104.04473)", "Smith 2021"),
    ("", ""),
])
def test_short_source_keeps_author_and_year(source, short):
    assert short_source(source) == short


def test_validation_rows_carry_the_description():
    from simulator.api import validation_rows

    rows = validation_rows()["rows"]
    assert list(rows[0])[:2] == ["run", "description"]
    by_run = {r["run"]: r["description"] for r in rows}
    assert by_run["MB2511-QWEN3-30B-A3B"] == "MoE 8/128 · 16× H100 · Megatron-Bridge"
    assert all(by_run.values())
