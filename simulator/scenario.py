"""Scenarios from YAML presets, files and command-line overrides.

Presets live in ``scenarios/``: ``models/*.yaml`` (architectures),
``clusters/*.yaml`` (GPUs and links) and ``*.yaml`` (whole scenarios). A
scenario file names its model and cluster by preset or spells them out, and may
override preset fields::

    name: deepseek-v3
    model: deepseek-v3                 # a preset name ...
    cluster: {preset: h800, num_gpus: 2048}   # ... or a preset plus overrides
    plan: {pp: 16, ep: 64, schedule: dualpipe, precision: fp8}
    training: {seq_len: 4096, global_batch: 15360, tokens: 14.8e12}

Overrides from the command line use dotted paths: ``plan.pp=8``,
``cluster.ib_gbps=25``, ``model.layers=30``. A model may also be a HuggingFace
``config.json`` (``model: path/to/config.json``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .config import ClusterConfig, CostConfig, ModelConfig, PlanConfig, Scenario, TrainingConfig, build
from .errors import ConfigError, special_file, unreadable

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS_DIR = Path(os.environ.get("GPUHOURS_SCENARIOS", ROOT / "scenarios"))
SECTIONS = ("model", "cluster", "plan", "training", "cost")


def _names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def list_models() -> list[str]:
    return _names(SCENARIOS_DIR / "models")


def list_clusters() -> list[str]:
    return _names(SCENARIOS_DIR / "clusters")


def list_scenarios() -> list[str]:
    return _names(SCENARIOS_DIR)


# YAML anchors let a few hundred bytes stand for billions of values ("billion laughs"): PyYAML shares the
# aliased objects, but printing one in an error message, or walking it, expands them all. No scenario comes
# near this many values (DeepSeek-V3's preset holds a few hundred; a 256-expert histogram is 256).
YAML_VALUES_MAX = 1_000_000


def _expanded_size(data: Any, budget: int = YAML_VALUES_MAX) -> int:
    """The values ``data`` holds with every alias expanded, counted until ``budget`` is passed. Shared
    sub-trees are sized once (memoised by identity), so a deep chain of anchors costs its length."""
    sizes: dict[int, int] = {}

    def size(x: Any) -> int:
        if isinstance(x, (dict, list)):
            hit = sizes.get(id(x))
            if hit is None:
                sizes[id(x)] = 1  # while it is being sized: an anchor inside itself is reported where it is read
                items = list(x.keys()) + list(x.values()) if isinstance(x, dict) else x
                hit = 1
                for v in items:
                    hit += size(v)
                    if hit > budget:
                        break
                sizes[id(x)] = hit
            return hit
        return 1

    return size(data)


def _bounded(data: Any, where: str) -> Any:
    try:
        n = _expanded_size(data)
    except RecursionError:
        raise ConfigError(where, "nests too deeply") from None
    if n > YAML_VALUES_MAX:
        raise ConfigError(where, f"its YAML anchors expand to more than {YAML_VALUES_MAX:,} values",
                          "a scenario without self-multiplying aliases")
    return data


def read_yaml(path: Path | str, where: str | None = None) -> Any:
    """Parse a YAML file; a syntax error becomes a one-line ConfigError."""
    where = where or str(path)
    if special_file(path):
        raise ConfigError(where, f"{path} is not a regular file", "a YAML file or a preset name")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except UnicodeDecodeError as e:
        raise ConfigError(where, f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise ConfigError(where, f"{path} nests too deeply (or an anchor refers to itself)") from None
    except ValueError as e:  # e.g. an integer past Python's digit limit
        raise ConfigError(where, f"{path}: unreadable value ({unreadable(e)})") from None
    except FileNotFoundError:
        raise ConfigError(where, f"file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(where, f"{path} is a directory; give a YAML file or a preset name") from None
    except OSError as e:
        raise ConfigError(where, f"{path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "malformed YAML"
        raise ConfigError(where, f"malformed YAML{at}: {problem}") from None
    return _bounded(data, where)


def _preset(kind: str, name: str) -> dict:
    folder = SCENARIOS_DIR / f"{kind}s"
    path = folder / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(kind, f"unknown {kind} preset {name!r}", ", ".join(_names(folder)))
    data = read_yaml(path, where=f"{kind} preset {name}")
    if not isinstance(data, dict):
        raise ConfigError(kind, f"preset {name!r} is not a mapping")
    return data


def _resolve_part(kind: str, spec: Any, seen: tuple[str, ...] = ()) -> dict:
    """A model/cluster given as a preset name, a path, or a mapping (with optional 'preset').
    ``seen``: the presets and files on the way here, so that a chain that loops is refused."""
    if isinstance(spec, str):
        if spec in seen:
            raise ConfigError(kind, f"presets refer to each other in a loop ({' -> '.join((*seen, spec))})",
                              "a chain of presets that ends")
        seen = (*seen, spec)
        if kind == "model" and spec.endswith(".json"):
            from .hf_config import model_from_hf_config

            return model_from_hf_config(spec)
        if spec.endswith((".yaml", ".yml")):
            data = read_yaml(spec, where=kind)
            return _resolve_part(kind, data, seen)
        data = dict(_preset(kind, spec))
        data.setdefault("name", spec)
        return _resolve_part(kind, data, seen) if "preset" in data else data
    if isinstance(spec, dict):
        spec = dict(spec)
        base_name = spec.pop("preset", None)
        if base_name is None:
            return spec
        if not isinstance(base_name, str):  # e.g. a YAML anchor inside its own mapping: model: &a {preset: *a}
            raise ConfigError(kind, "refers to itself or to a mapping as its preset", "a preset name or a path")
        base = _resolve_part(kind, base_name, seen)
        return _deep_merge(base, spec)
    raise ConfigError(kind, f"expected a preset name or a mapping, got {spec!r}")


def _section(raw: dict, name: str) -> dict:
    """A scenario section that must be a mapping: absent (or empty) is {}, anything else is refused."""
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(name, f"expected a mapping of fields, got {value!r}"[:200])
    return value


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_SECTION_TYPES = {"model": ModelConfig, "cluster": ClusterConfig, "plan": PlanConfig, "training": TrainingConfig,
                  "cost": CostConfig}


def _is_text_field(path: list[str]) -> bool:
    """A field that holds text as typed (a name, a source, a preset): its value is not read as YAML,
    which would turn ``model.name=1_000`` into the number 1000 and ``model.name=yes`` into true."""
    if len(path) != 2:
        return False
    if path[1] == "preset":
        return True
    field = _SECTION_TYPES[path[0]].__dataclass_fields__.get(path[1])
    return field is not None and field.type in (str, "str")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``plan.pp=8`` -> (["plan", "pp"], 8); values are parsed as YAML scalars, except in text fields."""
    if "=" not in text:
        raise ConfigError("--set", f"{text!r} is not of the form section.field=value", "e.g. plan.pp=8")
    key, _, raw = text.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if len(path) < 2 or path[0] not in SECTIONS:
        raise ConfigError("--set", f"{key!r} does not name a field", "section.field with section in " + ", ".join(SECTIONS))
    if _is_text_field(path):
        return path, raw.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    except (ValueError, RecursionError) as e:  # an integer past Python's digit limit; nesting too deep
        raise ConfigError(".".join(path), f"unreadable value ({unreadable(e)})") from None
    _bounded(value, ".".join(path))
    if isinstance(value, bool):  # keep the words: a text field then reports 'true', and a flag still reads it
        value = raw.strip()
    return path, value


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for text in overrides:
        path, value = parse_override(text)
        section = path[0]
        part = raw.get(section, {})
        if isinstance(part, str):  # a preset name: turn it into {preset: name} to override fields
            part = {"preset": part}
        part = dict(part) if isinstance(part, dict) else {}
        if path == ["cluster", "preset"] and "num_gpus" not in part:
            # Another GPU model, the same cluster size: pin the count the scenario resolved to before
            # the swap (a preset's own count would silently resize the run).
            try:
                part["num_gpus"] = _resolve_part("cluster", dict(part)).get("num_gpus")
            except ConfigError:
                pass
            if part.get("num_gpus") is None:
                part.pop("num_gpus", None)
        node = part
        for p in path[1:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError("--set", f"{'.'.join(path)}: {p} is not a section")
        node[path[-1]] = value
        raw[section] = part
    return raw


# Top-level training fields that, on a scenario listing phases, describe its first phase (pre-training).
FIRST_PHASE_FIELDS = ("seq_len", "global_batch", "tokens", "batch_ramp_from", "batch_ramp_tokens")


def _first_phase_follows(raw: dict, overrides: tuple[str, ...]) -> dict:
    """Overriding ``training.tokens`` (or the batch, sequence length or ramp) of a scenario with phases
    also sets its first phase, so the run totals describe the run the headline step describes."""
    touched = {o.split("=", 1)[0].strip() for o in overrides if "=" in o}
    fields = [f for f in FIRST_PHASE_FIELDS if f"training.{f}" in touched]
    tr = raw.get("training")
    if not fields or not isinstance(tr, dict) or not isinstance(tr.get("phases"), list) or not tr["phases"] \
            or not isinstance(tr["phases"][0], dict):
        return raw
    first = dict(tr["phases"][0])
    for f in fields:
        if first.get(f) != tr[f]:
            first.pop("published_gpu_hours", None)  # the published run was another one
        first[f] = tr[f]
        if f == "tokens":
            first.pop("steps", None)
    return {**raw, "training": {**tr, "phases": [first, *tr["phases"][1:]]}}


def scenario_from_dict(raw: dict, name: str = "scenario", overrides: tuple[str, ...] = (),
                       check_plan: bool = True) -> Scenario:
    """Build and validate a Scenario from plain data plus overrides (``check_plan=False``: each part alone,
    :meth:`Scenario.validate_parts`)."""
    if not isinstance(raw, dict):
        raise ConfigError("scenario", f"expected a mapping, got {type(raw).__name__}")
    raw = _first_phase_follows(apply_overrides(raw, overrides), overrides)
    unknown = [k for k in raw if k not in SECTIONS + ("name", "description", "profile", "notes")]
    if unknown:
        raise ConfigError(unknown[0], "unknown scenario section", ", ".join(SECTIONS + ("name", "description", "profile")))
    for req in ("model", "cluster"):
        if req not in raw:
            raise ConfigError(req, "required section is missing")
    model_d = _resolve_part("model", raw["model"])
    cluster_d = _resolve_part("cluster", raw["cluster"])
    if "profile" in raw and raw["profile"] is not None:
        cluster_d = {**cluster_d, "profile": raw["profile"]}
    model = build(ModelConfig, model_d, "model")
    cluster = build(ClusterConfig, cluster_d, "cluster")
    plan = build(PlanConfig, _section(raw, "plan"), "plan")
    training = build(TrainingConfig, _section(raw, "training"), "training")
    cost = build(CostConfig, _section(raw, "cost"), "cost")
    sc = Scenario(
        name=str(raw.get("name", name)),
        model=model,
        cluster=cluster,
        plan=plan,
        training=training,
        cost=cost,
        description=str(raw.get("description", "")),
    )
    return sc.validate() if check_plan else sc.validate_parts()


def raw_scenario(name_or_path: str) -> dict:
    """The unvalidated mapping behind a scenario preset or file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        data = read_yaml(p, where="scenario")
    else:
        path = SCENARIOS_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(
                "scenario", f"unknown scenario {name_or_path!r}", ", ".join(list_scenarios()) + ", or a path to a YAML file"
            )
        data = read_yaml(path, where=f"scenario {name_or_path}")
    if not isinstance(data, dict):
        raise ConfigError("scenario", f"{name_or_path} is not a YAML mapping")
    return data


def load_scenario(name_or_path: str, overrides: list[str] | tuple[str, ...] = (), check_plan: bool = True) -> Scenario:
    """Load a scenario preset (by name) or YAML file, apply overrides, validate (``check_plan=False``: each
    part alone, not the plan against the rest)."""
    return _load_cached(str(name_or_path), tuple(overrides), check_plan)


@lru_cache(maxsize=256)
def _load_cached(name_or_path: str, overrides: tuple[str, ...], check_plan: bool = True) -> Scenario:
    raw = raw_scenario(name_or_path)
    try:
        return scenario_from_dict(raw, name=Path(name_or_path).stem, overrides=overrides, check_plan=check_plan)
    except ConfigError as e:
        # An override can break another field's check ("--set model.layers=1" fails on
        # model.first_k_dense): name the overrides too, or the message points away from the cause.
        keys = [o.partition("=")[0].strip() for o in overrides]
        if not overrides or e.field == "--set" or any(e.field == k or e.field.startswith((k + ".", k + "["))
                                                      for k in keys):
            raise
        raise ConfigError(e.field, f"{e.problem} (with --set {' --set '.join(overrides)})", e.allowed) from None


def load_model(name_or_path: str) -> ModelConfig:
    m = build(ModelConfig, _resolve_part("model", name_or_path), "model")
    m.validate()
    return m


def load_cluster(name: str, **overrides: Any) -> ClusterConfig:
    c = build(ClusterConfig, _deep_merge(_resolve_part("cluster", name), overrides), "cluster")
    c.validate()
    return c
