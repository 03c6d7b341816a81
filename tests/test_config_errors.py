"""Bad input: one line naming the field and what is allowed, exit code 2, no traceback."""

import json
import math
import subprocess
import sys

import pytest

from simulator.cli import main
from simulator.errors import ConfigError
from simulator.scenario import load_scenario


@pytest.mark.parametrize(
    "overrides,field,allowed",
    [
        (["plan.pp=5"], "plan", "divides the GPU count"),
        (["plan.ep=48"], "plan.ep", "divisor of 256"),
        # EP is carved out of a stage's tp*cp*dp GPUs: 128 divides 256 experts but not tp*cp*dp=64.
        (["plan.pp=32", "plan.ep=128"], "plan.ep", "a divisor of 64"),
        (["plan.pp=128", "cluster.num_gpus=8192"], "plan.pp", "at most 65"),
        (["plan.pp=64", "plan.layer_split=uniform", "cluster.num_gpus=4096"], "plan.pp", "at most 61"),
        (["plan.micro_batch=7"], "plan.micro_batch", "divides global_batch"),
        # Megatron's CP runs inside Transformer Engine's fused attention; the unfused core has no CP.
        (["plan.attention_kernel=unfused", "plan.cp=2"], "plan.attention_kernel", "or cp 1"),
        (["plan.schedule=dualpipe", "training.global_batch=2560"], "plan.micro_batch", "larger global_batch"),
        (["plan.schedule=warp"], "plan.schedule", "1f1b"),
        (["plan.recompute=some"], "plan.recompute", "selective"),
        (["plan.dualpipe_sends=early"], "plan.dualpipe_sends", "in_pair, after_pair"),
        (["plan.bogus=1"], "plan.bogus", "unknown field"),
        (["plan.pp=two"], "plan.pp", "integer"),
        (["plan.zero=4"], "plan.zero", "0, 1, 2, 3"),
        (["plan.comm_sms=132"], "plan.comm_sms", "0..131"),
        (["plan.etp=2"], "plan.etp", "allowed: 1"),
        (["plan.redundant_experts=16129"], "plan.redundant_experts", "0 .. 16128"),
        # Megatron-LM's forward-backward pairs need a steady state that can pair (TransformerConfig).
        (["plan.schedule=zb1p", "plan.ep_overlap=on"], "plan.ep_overlap", "interleaved"),
        (["plan.schedule=1f1b", "plan.ep_overlap=on"], "plan.ep_overlap", "schedule interleaved"),
        (["plan.schedule=interleaved", "plan.vpp=2", "training.global_batch=16384", "plan.ep_overlap=on",
          "plan.recompute=full"], "plan.ep_overlap", "recompute none, selective"),
    ],
)
def test_invalid_plans_name_the_field(overrides, field, allowed):
    with pytest.raises(ConfigError) as e:
        load_scenario("deepseek-v3", tuple(overrides))
    msg = str(e.value)
    assert msg.startswith(field), msg
    assert allowed in msg and "\n" not in msg


@pytest.mark.parametrize("scenario,override,field", [
    ("deepseek-v3", "cluster.ib_latency_us=.inf", "cluster.ib_latency_us"),
    ("deepseek-v3", "cluster.ib_latency_us=.nan", "cluster.ib_latency_us"),
    ("deepseek-v3", "cluster.gpu.fp8_tflops=-100", "cluster.gpu.fp8_tflops"),
    ("deepseek-v3", "cluster.gpu.bf16_tflops=.inf", "cluster.gpu.bf16_tflops"),
    ("deepseek-v3", "cost.usd_per_gpu_hour=.nan", "cost.usd_per_gpu_hour"),
    ("deepseek-v3", "training.tokens=.inf", "training.tokens"),
    ("deepseek-v3", "training.batch_ramp_tokens=-1e12", "training.batch_ramp_tokens"),
    ("deepseek-v3", "model.head_dim=-128", "model.head_dim"),
    ("deepseek-v3", "model.max_nodes_per_token=-1", "model.max_nodes_per_token"),
    ("deepseek-v3", "model.topk_groups=100", "model.topk_groups"),
    ("deepseek-v3", "plan.zipf_s=.nan", "plan.zipf_s"),
    ("deepseekmoe-16b-nsa", "model.nsa.compress_stride=0", "model.nsa.compress_stride"),
    ("llama2-7b", "plan.vpp=4", "plan.vpp"),
])
def test_non_finite_negative_and_ignored_values_are_refused(scenario, override, field):
    """Values that used to pass and give NaN, a faster step or a division by zero."""
    with pytest.raises(ConfigError) as e:
        load_scenario(scenario, (override,))
    assert str(e.value).startswith(field) and "\n" not in str(e.value)


def test_phase_plan_is_checked_like_the_plan(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text("model: deepseekmoe-2b\ncluster: {preset: h800, num_gpus: 8}\ntraining:\n  global_batch: 64\n  phases:\n"
                 "    - {name: a, seq_len: 4096, global_batch: 64, tokens: 1.0e9, plan: {bogus: 1}}\n")
    assert main(["predict", str(p)]) == 2
    assert "training.phases.plan.bogus: unknown field" in capsys.readouterr().err


def test_a_run_of_given_phases_only_is_printed(tmp_path, capsys):
    """Phases that all carry gpu_hours (none modelled) left the run's GPU-hours per 1T tokens None,
    which the text table formatted with a TypeError traceback."""
    p = tmp_path / "s.yaml"
    p.write_text("model: deepseekmoe-2b\ncluster: {preset: h800, num_gpus: 64}\ntraining:\n  phases:\n"
                 "    - {name: a, seq_len: 4096, global_batch: 1024, gpu_hours: 5}\n"
                 "    - {name: b, seq_len: 4096, global_batch: 1024, gpu_hours: 7, published_gpu_hours: 7}\n")
    assert main(["predict", str(p)]) == 0
    out = capsys.readouterr().out
    assert "run total              12 GPU-hours" in out and "run GPU-hours / 1T" not in out


@pytest.mark.parametrize("argv", [
    ["trace", "deepseekmoe-2b", "-o", "/nonexistent-dir/x.json"],
    ["trace", "deepseekmoe-2b", "-o", "trace.txt"],
    ["dashboard", "--port", "-1"],
    ["search", "deepseekmoe-2b", "--gpus", "7", "--no-progress"],
    ["dashboard", "--port", "70000"],
    ["validate", "--csv", "/"],
    ["predict", "deepseek-v3", "--profile", "/nonexistent.json"],
    ["schedule", "1f1b", "--pp", "4.5", "--microbatches", "8"],
    ["search", "deepseekmoe-2b", "--gpus", "8", "--out", "/"],
    ["search", "deepseekmoe-2b", "--gpus", "8", "--scheduler", "bogus"],
    ["calibrate", "--device", "cpu", "--seed", str(2**64), "--out", "/tmp/never-written.json"],
])
def test_paths_and_usage_errors_are_one_line(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse exits by itself
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    flag = next((a for a in argv if a in ("--scheduler", "--seed")), None)
    assert flag is None or flag in err, err


@pytest.mark.parametrize("argv,message", [
    (["predict", "deepseek-v3", "--engine", "des", "--set", "cluster.nvlink_gbps=1e-300"],
     "cluster.nvlink_gbps: 1e-300 is out of range; allowed: 1e-3 .. 1e7 GB/s"),
    (["predict", "deepseek-v3", "--json", "--set", "cluster.nvlink_gbps=1e-300"],
     "cluster.nvlink_gbps: 1e-300 is out of range; allowed: 1e-3 .. 1e7 GB/s"),
    (["predict", "deepseek-v3", "--engine", "des", "--set", "cluster.ib_gbps=2e7"],
     "cluster.ib_gbps: 20000000 is out of range; allowed: 1e-3 .. 1e7 GB/s"),
    (["predict", "deepseek-v3", "--engine", "des", "--set", "cluster.gpu.hbm_gbps=1e-300"],
     "cluster.gpu.hbm_gbps: 1e-300 is out of range; allowed: 1e-3 .. 1e7 GB/s"),
    (["predict", "deepseek-v3", "--engine", "des", "--set", "cluster.gpu.bf16_tflops=1e-300"],
     "cluster.gpu.bf16_tflops: 1e-300 is out of range; allowed: 1e-3 .. 1e7 TFLOP/s"),
    (["predict", "deepseek-v3", "--set", "cluster.gpu.fp8_tflops=1e-9"],
     "cluster.gpu.fp8_tflops: 1e-9 is out of range; allowed: 1e-3 .. 1e7 TFLOP/s, or 0 (not given)"),
    (["predict", "deepseek-v3", "--set", "cluster.gpu.hbm_gib=123456789"],
     "cluster.gpu.hbm_gib: 123456789 is out of range; allowed: 1e-3 .. 1e7 GiB"),
    (["predict", "deepseek-v3", "--set", "cluster.ib_latency_us=1e7"],
     "cluster.ib_latency_us: 10000000 is out of range; allowed: 0 .. 1e6 us"),
    (["predict", "deepseek-v3", "--set", "cost.usd_per_gpu_hour=1e308"],
     "cost.usd_per_gpu_hour: 1e308 is out of range; allowed: 0 .. 1e6 USD"),
    (["predict", "deepseek-v3", "--set", "training.tokens=0.5"], "training.tokens: 0.5 is out of range; allowed: 1 .. 1e18"),
    (["predict", "deepseek-v3", "--set", "training.tokens=1e19"], "training.tokens: 1e19 is out of range; allowed: 1 .. 1e18"),
    (["sensitivity", "deepseekmoe-2b", "--json", "--set", "cluster.nvlink_gbps=1e-305"],
     "cluster.nvlink_gbps: 1e-305 is out of range"),
    (["search", "deepseekmoe-2b", "--gpus", "8", "--no-progress", "--top", "1", "--workers", "1", "--json",
      "--set", "cost.usd_per_gpu_hour=1e308"], "cost.usd_per_gpu_hour: 1e308 is out of range"),
])
def test_physical_inputs_out_of_range_are_refused_when_loaded(argv, message, capsys):
    """Each input positive and finite, but so extreme that a step overflowed: the DES, whose clock counts
    whole nanoseconds, failed on int(inf) with a message naming no field. Now refused at load time."""
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.count("\n") == 1
    assert cap.err.startswith(f"gpuhours: error: {message}"), cap.err


@pytest.mark.parametrize("argv", [
    ["predict", "deepseek-v3", "--set", "cluster.nvlink_gbps=1e-3", "--set", "cluster.ib_gbps=1e-3",
     "--set", "cluster.gpu.bf16_tflops=1e-3", "--set", "cluster.gpu.fp8_tflops=1e-3", "--set", "cluster.gpu.hbm_gbps=1e-3",
     "--set", "cluster.nvlink_latency_us=1e6", "--set", "cluster.ib_latency_us=1e6",
     "--set", "cost.usd_per_gpu_hour=1e6", "--set", "training.tokens=1e18"],
    ["predict", "deepseek-v3", "--set", "cluster.nvlink_gbps=1e7", "--set", "cluster.ib_gbps=1e7",
     "--set", "cluster.gpu.bf16_tflops=1e7", "--set", "cluster.gpu.fp8_tflops=1e7", "--set", "cluster.gpu.hbm_gbps=1e7",
     "--set", "cluster.gpu.hbm_gib=1e7", "--set", "cluster.nvlink_latency_us=0", "--set", "cost.usd_per_gpu_hour=0"],
])
@pytest.mark.parametrize("engine", ["analytic", "des"])
def test_the_ends_of_the_physical_ranges_give_a_finite_result(argv, engine, capsys):
    """The ranges are what keeps a result finite: every input at its slowest (or fastest) end together
    still gives a finite step, in both engines."""
    assert main([*argv, "--engine", engine, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert 0 < rep["step_time_s"] < math.inf and 0 <= rep["usd_per_trillion_tokens"] < math.inf


@pytest.mark.parametrize("override,message", [
    ("model.layers=1e15", "model.layers: 1000000000000000 is out of range; allowed: 1 .. 10000 layers"),
    ("model.mtp_depth=1e15", "model.mtp_depth: 1000000000000000 is out of range; allowed: 0 .. 1000 modules"),
    ("model.hidden=1e160", "model.hidden: 1e160 is out of range; allowed: 1 .. 1e7"),
    ("model.kv_heads=1e6", "model.kv_heads: 1000000 is out of range; allowed: 1 .. 1e5 heads, or 0 (as many as heads)"),
    ("model.n_routed_experts=2e6", "model.n_routed_experts: 2000000 is out of range; allowed: 1 .. 1e6 experts, or 0 (none)"),
    ("training.seq_len=1e160", "training.seq_len: 1e160 is out of range; allowed: 1 .. 1e9 tokens"),
    ("training.global_batch=1e15", "training.global_batch: 1000000000000000 is out of range; allowed: 1 .. 1e9 sequences"),
    ("training.batch_ramp_from=1e15", "training.batch_ramp_from: 1000000000000000 out of range; allowed: 0 (no ramp) "
     "or a batch size 1 .. 1e9 sequences"),
    ("cluster.num_gpus=1e15", "cluster.num_gpus: 1000000000000000 is out of range; allowed: 1 .. 1e8 GPUs"),
    ("cluster.gpu.sms=1e7", "cluster.gpu.sms: 10000000 is out of range; allowed: 1 .. 1e6 SMs"),
    # each field in range, but the schedule would list 781,250 micro-batches per replica (the step, or the ramp's start)
    ("training.batch_ramp_from=20000000", "training.batch_ramp_from: 20000000 sequences are 156,250 micro-batches per "
     "pipeline replica (dp 128 x micro_batch 1); allowed: 0 (no ramp) or at most 12800000 (100000 micro-batches)"),
    ("training.global_batch=100000000", "plan.micro_batch: 781250 micro-batches per pipeline replica"),
])
def test_whole_number_sizes_out_of_range_are_refused(override, message, capsys):
    """Sizes the engines walk one by one (layers, MTP modules, micro-batches) hung at 1e15: no answer,
    no error. Sizes they only multiply (hidden=1e160) gave a meaningless figure or an error naming no
    field. Each now has a range (simulator/config.py) and is refused by name at once."""
    assert main(["predict", "deepseek-v3", "--set", override]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.count("\n") == 1
    assert cap.err.startswith(f"gpuhours: error: {message}"), cap.err


def test_a_phase_ramp_that_would_list_too_many_micro_batches_is_named(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text("model: deepseekmoe-2b\ncluster: {preset: h800, num_gpus: 8}\ntraining:\n  global_batch: 64\n  phases:\n"
                 "    - {name: a, seq_len: 4096, global_batch: 64, tokens: 1.0e12, batch_ramp_from: 900000000,"
                 " batch_ramp_tokens: 1.0e11}\n")
    assert main(["predict", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpuhours: error: training.phases.a.batch_ramp_from: 900000000 sequences are 112,500,000 "
                          "micro-batches per pipeline replica (dp 8 x micro_batch 1); allowed: 0 (no ramp) or at most "
                          "800000"), err


@pytest.mark.parametrize("argv,patch,field", [
    (["predict", "deepseek-v3", "--json"], "report", "usd_per_trillion_tokens"),
    (["predict", "deepseek-v3"], "report", "usd_per_trillion_tokens"),
    (["sensitivity", "deepseekmoe-2b", "--json"], "bands", "base"),
])
def test_a_result_that_overflows_is_refused_not_printed(argv, patch, field, capsys, monkeypatch):
    """The last net under the input ranges: a result that is inf anyway (no input today gets there) is
    refused by name: --json printed Infinity (not JSON), the table $inf."""
    import simulator.api
    import simulator.sensitivity

    if patch == "report":
        real = simulator.api.report
        monkeypatch.setattr(simulator.api, "report", lambda pred: {**real(pred), field: math.inf})
    else:
        real = simulator.sensitivity.prediction_bands
        monkeypatch.setattr(simulator.sensitivity, "prediction_bands", lambda *a, **k: {**real(*a, **k), field: math.inf})
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.count("\n") == 1
    assert cap.err.startswith(f"gpuhours: error: {field}: inf (an input is too extreme"), cap.err


@pytest.mark.parametrize("argv", [
    ["validate", "--csv", ""],
    ["validate", "--profile", " "],
    ["predict", "deepseekmoe-2b", "--profile", ""],
    ["trace", "deepseekmoe-2b", "--profile", "", "-o", "/tmp/never-written.json"],
])
def test_an_empty_option_value_is_refused_not_taken_as_absent(argv, capsys):
    """`--csv "$UNSET"` validated the public set and exited 0; an empty --profile used the cluster's."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    cap = capsys.readouterr()
    flag = next(a for a in argv if a in ("--csv", "--profile"))
    assert cap.out == "" and f"argument {flag}: empty; allowed:" in cap.err and cap.err.count("\n") == 1


@pytest.mark.parametrize("argv,message", [
    (["dualpipe", "--pp", "7", "--microbatches", "14"], "--pp: dualpipe needs an even pp, got 7"),
    (["1f1b", "--pp", "0", "--microbatches", "8"], "--pp: must be an integer >= 1, got 0"),
    (["dualpipe", "--pp", "4", "--microbatches", "7"], "--microbatches: dualpipe needs an even number >= 2*pp=8, got 7"),
    (["dualpipev", "--pp", "4", "--microbatches", "7"], "--microbatches: dualpipev needs >= 2*pp=8 (pp = devices), got 7"),
    (["interleaved", "--pp", "4", "--microbatches", "6", "--vpp", "2"],
     "--microbatches: interleaved needs a multiple of pp=4, got 6"),
    (["1f1b", "--pp", "4", "--microbatches", "8", "--vpp", "2"], "--vpp: only interleaved uses vpp; 1f1b needs vpp=1, got 2"),
    (["gpipe", "--pp", "4", "--microbatches", "8"],
     "NAME: unknown 'gpipe'; allowed: 1f1b, interleaved, zb1p, dualpipe, dualpipev"),
    (["1f1b", "--pp", "4", "--microbatches", "8", "--w", "3"], "--w: must be <= --b (W is part of B), got w=3.0 b=2.0"),
    (["1f1b", "--pp", "4", "--microbatches", "8", "--f", "nan"], "--f: must be a finite number >= 0, got nan"),
    (["1f1b", "--pp", "4", "--microbatches", "8", "--b", "-2", "--w", "-3"], "--b: must be a finite number >= 0"),
    (["1f1b", "--pp", "4", "--microbatches", "8", "--fb", "-1"], "--fb: must be a finite number >= 0, got -1.0"),
    (["1f1b", "--pp", "4", "--microbatches", "8", "--p2p", "-1"], "--p2p: must be a finite number >= 0, got -1.0"),
    (["zb1p", "--pp", "4", "--microbatches", "8", "--pairs"], "--pairs: forward-backward pairs need 1f1b, interleaved"),
    (["1f1b", "--pp", "4", "--microbatches", "8", "--f", "1e308", "--b", "1e308"],
     "--f, --b, --w, --fb, --p2p: the step overflows (makespan inf); allowed: F, B, W, F&B and p2p small enough"),
    (["1f1b", "--pp", "4", "--microbatches", "8", "--width", "4"], "--width: 4 columns is too narrow; allowed: 40 or more"),
])
def test_schedule_errors_name_the_flags_typed(argv, message, capsys):
    """`gpuhours schedule` is given --pp and --microbatches, not a scenario: its errors said plan.pp and
    plan.microbatches. Explanation and allowed values are the library's, word for word."""
    assert main(["schedule", *argv]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.startswith(f"gpuhours: error: {message}") and cap.err.count("\n") == 1, cap.err
    assert "plan." not in cap.err and "times." not in cap.err


def test_dualpipe_needs_even_pp():
    with pytest.raises(ConfigError) as e:
        load_scenario("deepseek-v3", ("plan.pp=8", "plan.ep=32", "plan.pp=7", "cluster.num_gpus=1792"))
    # The odd pp must be what is refused (not, say, the GPU count): the field and the rule are named.
    assert str(e.value).startswith("plan.pp: 7 is odd") and "dualpipe needs an even pp" in str(e.value)
    load_scenario("deepseek-v3", ("plan.pp=8", "plan.ep=32", "plan.pp=7", "cluster.num_gpus=1792",
                                  "plan.schedule=dualpipev"))  # dualpipev takes an odd pp


def test_unknown_preset_lists_allowed(capsys):
    assert main(["predict", "no-such-scenario"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "deepseek-v3" in err and "allowed" in err


def test_unknown_model_preset(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text("model: gpt-9\ncluster: h800\n")
    assert main(["predict", str(p)]) == 2
    assert "model: unknown model preset 'gpt-9'" in capsys.readouterr().err


def test_a_preset_chain_that_loops_is_refused(tmp_path, capsys):
    """A model file whose `preset:` leads back to itself recursed until RecursionError."""
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"preset: {b}\nlayers: 3\n")
    b.write_text(f"preset: {a}\n")
    s = tmp_path / "s.yaml"
    s.write_text(f"model: {a}\ncluster: h800\n")
    assert main(["predict", str(s)]) == 2
    err = capsys.readouterr().err
    assert f"model: presets refer to each other in a loop ({a} -> {b} -> {a})" in err and err.count("\n") == 1


def test_malformed_yaml(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("model: [deepseek-v3\ncluster: h800\n")
    assert main(["predict", str(p)]) == 2
    err = capsys.readouterr().err
    assert "malformed YAML" in err and err.count("\n") == 1


def test_malformed_csv(tmp_path, capsys):
    p = tmp_path / "bad.csv"
    p.write_text("a,b\n1,2\n")
    assert main(["validate", "--csv", str(p)]) == 2
    assert "lacks column 'run_id'" in capsys.readouterr().err


def test_csv_row_shorter_than_its_header_is_one_line(tmp_path, capsys):
    """A row measured by MFU that stops before mfu_definition (csv gives None) raised AttributeError."""
    import csv

    from simulator.validate import DEFAULT_CSV

    with open(DEFAULT_CSV, newline="", encoding="utf-8") as f:
        header, first = list(csv.reader(f))[:2]
    first[header.index("tokens_per_s_per_gpu")] = ""
    short = tmp_path / "short.csv"
    short.write_text(",".join(header) + "\n" + ",".join(first[:header.index("mfu_definition")]) + "\n")
    assert main(["validate", "--csv", str(short)]) == 2
    err = capsys.readouterr().err
    assert f"{first[0]}.mfu_definition: unsupported ''; allowed: palm" in err and err.count("\n") == 1, err


def test_validate_with_nothing_to_model_exits_2(tmp_path, capsys):
    """A CSV whose rows all fail (or that has none) is bad input, not a 0-row success."""
    from simulator.validate import DEFAULT_CSV

    header, first = open(DEFAULT_CSV).read().splitlines()[:2]
    empty = tmp_path / "empty.csv"
    empty.write_text(header + "\n")
    assert main(["validate", "--csv", str(empty)]) == 2
    assert "validate --csv" in capsys.readouterr().err
    bad = tmp_path / "bad_gpu.csv"
    bad.write_text(header + "\n" + first.replace("H100-SXM-80GB", "TPUv9") + "\n")
    assert main(["validate", "--csv", str(bad)]) == 2
    cap = capsys.readouterr()
    assert "unknown GPU 'TPUv9'" in cap.out and "none of its rows could be modelled" in cap.err
    assert cap.err.count("\n") == 1


def test_bad_override_syntax(capsys):
    assert main(["predict", "deepseek-v3", "--set", "pp8"]) == 2
    assert "--set" in capsys.readouterr().err


def test_no_traceback_in_subprocess():
    r = subprocess.run([sys.executable, "-m", "simulator.cli", "predict", "deepseek-v3", "--set", "plan.ep=48"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert r.stdout == ""


def test_yaml_booleans_in_text_fields_are_reported_as_written(tmp_path):
    """YAML 1.1 reads true/on as one boolean: a --set keeps the user's word, a file says what happened."""
    with pytest.raises(ConfigError) as e:
        load_scenario("deepseek-v3", ("plan.recompute=true",))
    assert "unknown value 'true'" in str(e.value)
    assert load_scenario("deepseek-v3", ("plan.ep_overlap=on", "plan.sp=yes")).plan.sp is True
    for word, switch in (("true", "on"), ("YES", "on"), ("Off", "off"), ("no", "off"), ("auto", "auto")):
        assert load_scenario("deepseek-v3", (f"plan.ep_overlap={word}",)).plan.ep_overlap == switch
    p = tmp_path / "s.yaml"
    p.write_text("model: deepseek-v3\ncluster: h800\nplan: {recompute: yes}\n")
    with pytest.raises(ConfigError) as e:
        load_scenario(str(p))
    assert "unknown value 'on' (a YAML file reads true/yes/on as on" in str(e.value)
    from simulator.config import PlanConfig, build

    assert build(PlanConfig, {"ep_overlap": True}, "plan").ep_overlap == "on"  # what `ep_overlap: yes` loads as


def test_training_overrides_reach_the_first_phase_of_a_lifecycle():
    """`--set training.tokens` on a scenario with phases prices the pre-training phase with it (it used to
    change only the headline step, leaving the run totals on the preset's tokens)."""
    from simulator.api import run_cost

    base = run_cost(load_scenario("deepseek-v3-lifecycle"))
    sc = load_scenario("deepseek-v3-lifecycle", ["training.tokens=1e12", "training.global_batch=7680"])
    first = sc.training.phases[0]
    assert (first.tokens, first.global_batch) == (1e12, 7680) and not first.published_gpu_hours
    run = run_cost(sc)
    assert run["phases"][0]["gpu_hours"] < base["phases"][0]["gpu_hours"] / 5
    assert [p["gpu_hours"] for p in run["phases"][1:]] == [p["gpu_hours"] for p in base["phases"][1:]]
    same = load_scenario("deepseek-v3-lifecycle", ["training.tokens=14.8e12"]).training.phases[0]
    assert same.published_gpu_hours == 2664000  # the preset's own value: still the published run


def test_swapping_the_cluster_preset_keeps_the_cluster_size():
    base = load_scenario("deepseek-v3")
    swapped = load_scenario("deepseek-v3", ["cluster.preset=h100"])
    assert swapped.cluster.gpu.name.startswith("H100") and swapped.cluster.num_gpus == base.cluster.num_gpus
    both = load_scenario("deepseek-v3", ["cluster.preset=h100", "cluster.num_gpus=1024", "plan.ep=32"])
    assert both.cluster.num_gpus == 1024


def test_an_override_that_breaks_another_field_is_named(capsys):
    # model.layers=1 is fine by itself but leaves first_k_dense=3 out of range: the message must
    # say which --set caused it, or it points away from the cause (UX review C10).
    assert main(["predict", "deepseek-v3", "--set", "model.layers=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpuhours: error: model.first_k_dense:") and "(with --set model.layers=1)" in err
    assert err.count("\n") == 1
    assert main(["predict", "deepseek-v3", "--set", "plan.ep=7"]) == 2  # names its own field: no suffix
    assert "with --set" not in capsys.readouterr().err
    # An error about the --set itself, or an element of the overridden list, is its own cause too.
    for bad, start in (("cluster=h100", "--set: 'cluster' does not name a field"),
                       ("training.phases=[5]", "training.phases[0]: expected a mapping")):
        assert main(["predict", "deepseek-v3", "--set", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"gpuhours: error: {start}") and "with --set" not in err, err


QWEN_MOE = {"architectures": ["Qwen2MoeForCausalLM"], "num_hidden_layers": 24, "hidden_size": 2048,
            "num_attention_heads": 16, "vocab_size": 151936, "num_key_value_heads": 16, "num_experts": 60,
            "num_experts_per_tok": 4, "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632}


@pytest.mark.parametrize("change,message", [
    ({"architectures": {"a": 1}}, "architectures: expected a list, got {'a': 1}"),
    ({"architectures": "Qwen2MoeForCausalLM"}, "architectures: expected a list, got 'Qwen2MoeForCausalLM'"),
    ({"moe_intermediate_size": 0}, "moe_intermediate_size: 0 is not a width; allowed: a whole number >= 1"),
    ({"moe_intermediate_size": "1408"}, "moe_intermediate_size: '1408' is not a width"),
    ({"shared_expert_intermediate_size": [1]}, "shared_expert_intermediate_size: [1] is not a width"),
    # Values the model refuses are named by the file's key, not by the model field they fill
    # (was "model.n_routed_experts: ..." for a file that has no such key).
    ({"num_experts": -4}, ".num_experts: must be a finite number >= 0, got -4"),
    ({"num_experts_per_tok": 0}, ".num_experts_per_tok: must be > 0 for an MoE model"),
    ({"hidden_size": "abc"}, ".hidden_size: expected an integer, got 'abc'"),
    ({"num_key_value_heads": 3}, ".num_key_value_heads: 3 does not divide heads=16"),
])
def test_malformed_hf_config_is_one_line(tmp_path, capsys, change, message):
    """A config.json whose fields have the wrong shape used to raise KeyError, TypeError or ZeroDivisionError."""
    import json

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({**QWEN_MOE, **change}))
    sc = tmp_path / "s.yaml"
    sc.write_text(f"model: {cfg}\ncluster: {{preset: h100, num_gpus: 8}}\ntraining: {{global_batch: 64}}\n")
    assert main(["predict", str(sc)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_set_keeps_text_fields_as_typed(capsys):
    """--set values are YAML scalars, but a name is text: model.name=1_000 became the number 1000, and
    model.preset=1_000 was refused as 'not a name' instead of as an unknown preset."""
    from simulator.scenario import load_scenario

    assert load_scenario("deepseek-v3", ["model.name=1_000"]).model.name == "1_000"
    assert load_scenario("deepseek-v3", ["model.name=yes"]).model.name == "yes"
    assert load_scenario("deepseek-v3", ["plan.pp=8"]).plan.pp == 8  # numbers stay numbers
    assert "unknown model preset '1_000'" in _one_line_error(["predict", "deepseek-v3", "--set", "model.preset=1_000"],
                                                              capsys)


@pytest.mark.parametrize("argv,flag", [
    (["search", "deepseek-v2-lite", "--gpus", "8", "--scheduler", ""], "--scheduler"),
    (["calibrate", "--out", "x.json", "--name", " "], "--name"),
])
def test_empty_labels_are_refused(capsys, argv, flag):
    """An empty --scheduler ran the search locally without a word; an empty --name wrote a nameless profile."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument {flag}: empty; allowed:" in err and err.count("\n") == 1


def test_hf_config_tie_word_embeddings_is_read_as_a_flag(tmp_path):
    """The text "false" used to count as true (bool("false"))."""
    import json

    from simulator.scenario import load_model

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({**QWEN_MOE, "tie_word_embeddings": "false"}))
    assert load_model(str(cfg)).tied_embeddings is False
    cfg.write_text(json.dumps({**QWEN_MOE, "tie_word_embeddings": 7}))
    with pytest.raises(ConfigError, match=r"config.json\).tie_word_embeddings: expected true or false"):
        load_model(str(cfg))


def test_ep_may_span_context_parallel_ranks():
    """Megatron-Core regroups a stage's tp*cp*dp GPUs as ep x expert-dp: with CP16 and PP8 a V3 stage
    has dp 16 but 256 GPUs, so EP64 fits (the old check asked for a divisor of dp*tp = 16)."""
    sc = load_scenario("deepseek-v3", ("training.seq_len=131072", "plan.cp=16", "plan.pp=8", "plan.ep=64"))
    assert sc.dp == 16 and sc.dp_expert == 4


@pytest.mark.parametrize("overrides,message", [
    (["cluster.gpu.peak_clock_mhz=0"], "cluster.gpu.peak_clock_mhz: 0 while sustained_clock_mhz is given; allowed: "
                                       "the SM clock behind the datasheet peaks"),
    (["cluster.gpu.sustained_clock_mhz=2000"], "cluster.gpu.sustained_clock_mhz: 2000 exceeds peak_clock_mhz=1830; "
                                               "allowed: 0 (not known) or 1 .. 1830 MHz"),
    (["cluster.gpu.sustained_clock_mhz=1e9"], "cluster.gpu.sustained_clock_mhz: 1000000000 is out of range; allowed: "
                                              "1 .. 1e5 MHz, or 0 (not known)"),
])
def test_sm_clocks_are_checked(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_scenario("deepseek-v3", overrides)
    assert str(e.value).startswith(message), str(e.value)


def _one_line_error(argv, capsys) -> str:
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.count("\n") == 1 and "Traceback" not in cap.err
    return cap.err


@pytest.mark.parametrize("text,message", [
    # A mapping where a list is expected (was an AttributeError / TypeError traceback).
    ("model: deepseekmoe-2b\ncluster: h800\ntraining: {phases: {b: 1, 2: 3}}\n", "training.phases: expected a list"),
    ("model: deepseekmoe-2b\ncluster: h800\nplan: {expert_histogram: {b: 1, 2: 3}}\n", "plan.expert_histogram: expected a list"),
    # A YAML anchor inside its own mapping, and nesting past Python's recursion limit (RecursionError).
    ("model: &a {preset: *a}\ncluster: h800\n", "model: refers to itself"),
    ("plan: " + "[" * 5000 + "]" * 5000 + "\n", "nests too deeply"),
    # A section of the wrong type was taken as empty.
    ("model: deepseekmoe-2b\ncluster: h800\nplan: 0\n", "plan: expected a mapping"),
    ("model: deepseekmoe-2b\ncluster: h800\ncost: []\n", "cost: expected a mapping"),
    # An integer past Python's 4300-digit limit named no field.
    ("model: deepseekmoe-2b\ncluster: h800\nplan: {tp: " + "9" * 5000 + "}\n", "unreadable value"),
])
def test_malformed_scenario_files_are_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert message in _one_line_error(["predict", str(path)], capsys)


@pytest.mark.parametrize("override,message", [
    ("training.phases.x=1", "training.phases: expected a list"),
    ("plan.seed=-1", "plan.seed: -1 is out of range"),
    ("plan.tp=" + "9" * 5000, "plan.tp: unreadable value"),
    # steps x batch x seq_len past the 1e18-token cap (was 1.1e28 GPU-hours, exit 0).
    ("training.phases=[{name: a, seq_len: 2048, global_batch: 2048, steps: 1e30}]", "training.phases[a].steps"),
])
def test_overrides_of_the_wrong_shape_or_size_are_one_line(capsys, override, message):
    assert message in _one_line_error(["predict", "deepseekmoe-2b", "--set", override], capsys)


def test_files_that_are_not_regular_or_not_text_are_named(tmp_path, capsys):
    import os

    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # opening it would block until a writer came
    assert "is not a regular file" in _one_line_error(["predict", str(fifo)], capsys)
    assert "is not a regular file" in _one_line_error(["predict", "deepseekmoe-2b", "--profile", str(fifo)], capsys)
    binary = tmp_path / "s.yaml"
    binary.write_bytes(b"\xff\xfe model")
    assert f"{binary.name} is not UTF-8" in _one_line_error(["predict", str(binary)], capsys)
    prof = json.loads(open("calibration/profiles/h100-published.json").read())
    prof["device"]["hbm_gbps"] = [1]  # read as a number for the sustained-clock ridge (was a TypeError)
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps(prof))
    assert "device.hbm_gbps must be a positive number" in _one_line_error(
        ["predict", "deepseekmoe-2b", "--profile", str(bad)], capsys)
    # --width had no upper bound: a billion columns ran for minutes
    assert "too wide" in _one_line_error(["schedule", "1f1b", "--pp", "4", "--microbatches", "8", "--width", "1000000000"],
                                         capsys)


def _one_row_csv(tmp_path, change: dict):
    """The public set's first row with ``change`` applied, alone in a CSV: (the original row, the path)."""
    import csv

    from simulator.validate import DEFAULT_CSV

    row = next(csv.DictReader(open(DEFAULT_CSV)))
    path = tmp_path / "r.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        w.writeheader()
        w.writerow({**row, **change})
    return row, path


@pytest.mark.parametrize("change,field", [
    ({"pp_schedule": "interleaved", "pp": "2", "vpp": "", "layers": ""}, "layers"),  # was a TypeError
    ({"pp_schedule": "interleaved", "pp": "0", "vpp": ""}, "pp"),  # was a ZeroDivisionError
])
def test_validate_rows_missing_sizes_are_named(tmp_path, capsys, change, field):
    row, path = _one_row_csv(tmp_path, change)
    # --json: nothing on stdout, the reason in the one line
    assert f"{row['run_id']}.{field}" in _one_line_error(["validate", "--csv", str(path), "--json"], capsys)


@pytest.mark.parametrize("change,message", [
    ({"tokens_per_s_per_gpu": "1e-320"}, "leaves the error undefined"),  # was +inf % (Infinity in --json)
    ({"tokens_per_s_per_gpu": "", "mfu_definition": "megatron-72 (TFLOP/s / 0)"}, "divides by a peak of 0"),
])
def test_validate_measurements_that_cannot_be_compared_are_named(tmp_path, capsys, change, message):
    row, path = _one_row_csv(tmp_path, change)
    assert main(["validate", "--csv", str(path), "--json"]) == 2
    cap = capsys.readouterr()
    assert message in cap.err and cap.err.count("\n") == 1 and "Traceback" not in cap.err


def test_prediction_output_does_not_depend_on_the_hash_seed():
    """The clamped-shape warning named the first shape met, which followed set order: 'n=256' under one
    PYTHONHASHSEED, 'n=129280' under another."""
    import os
    import subprocess
    import sys

    outs = set()
    for seed in ("1", "5"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outs.add(subprocess.run([sys.executable, "-m", "simulator.cli", "predict", "deepseek-v3", "--json"],
                                capture_output=True, text=True, env=env, check=True).stdout)
    assert len(outs) == 1


def test_a_kept_config_hash_never_leaves_its_process():
    """config.hash_once keeps the model's, GPU's and cluster's hash after first use. A string's hash differs from
    process to process, so the kept value is dropped when the config is pickled (a search's worker processes,
    Dask), copied or rebuilt; equal configs still hash alike."""
    import copy
    import dataclasses
    import os
    import pickle
    import subprocess
    import sys

    from simulator.api import load

    sc = load("deepseek-v3")
    for cfg in (sc.model, sc.cluster, sc.cluster.gpu):
        h = hash(cfg)
        assert hash(cfg) == h and "_hash" in cfg.__dict__
        for other in (pickle.loads(pickle.dumps(cfg)), copy.deepcopy(cfg), copy.copy(cfg)):
            assert "_hash" not in other.__dict__ and other == cfg and hash(other) == h
        assert hash(dataclasses.replace(cfg)) == h
    # Pickled in a process of another hash seed, unpickled here: the model hashes as this process's own.
    code = ("import pickle, sys; from simulator.api import load; m = load('deepseek-v3').model; hash(m); "
            "sys.stdout.buffer.write(pickle.dumps(m))")
    env = {**os.environ, "PYTHONHASHSEED": "7"}
    theirs = pickle.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, check=True).stdout)
    assert theirs == sc.model and hash(theirs) == hash(sc.model)
    assert {theirs: 1}[sc.model] == 1
