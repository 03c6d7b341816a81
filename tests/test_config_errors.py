"""Bad input: one line naming the field and what is allowed, exit code 2, no traceback."""

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
        (["plan.pp=64", "cluster.num_gpus=4096"], "plan.pp", "at most 61"),
        (["plan.micro_batch=7"], "plan.micro_batch", "divides global_batch"),
        (["plan.schedule=dualpipe", "training.global_batch=2560"], "plan.micro_batch", "larger global_batch"),
        (["plan.schedule=warp"], "plan.schedule", "1f1b"),
        (["plan.recompute=some"], "plan.recompute", "selective"),
        (["plan.bogus=1"], "plan.bogus", "unknown field"),
        (["plan.pp=two"], "plan.pp", "integer"),
        (["plan.zero=4"], "plan.zero", "0, 1, 2, 3"),
        (["plan.comm_sms=132"], "plan.comm_sms", "0..131"),
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


def test_dualpipe_needs_even_pp():
    with pytest.raises(ConfigError) as e:
        load_scenario("deepseek-v3", ("plan.pp=8", "plan.ep=32", "plan.pp=7", "cluster.num_gpus=1792"))
    assert "plan.pp" in str(e.value) or "plan" in str(e.value)


def test_unknown_preset_lists_allowed(capsys):
    assert main(["predict", "no-such-scenario"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "deepseek-v3" in err and "allowed" in err


def test_unknown_model_preset(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text("model: gpt-9\ncluster: h800\n")
    assert main(["predict", str(p)]) == 2
    assert "model: unknown model preset 'gpt-9'" in capsys.readouterr().err


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


def test_bad_override_syntax(capsys):
    assert main(["predict", "deepseek-v3", "--set", "pp8"]) == 2
    assert "--set" in capsys.readouterr().err


def test_no_traceback_in_subprocess():
    r = subprocess.run([sys.executable, "-m", "simulator.cli", "predict", "deepseek-v3", "--set", "plan.ep=48"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert r.stdout == ""
