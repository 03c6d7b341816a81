"""Read a model architecture from a HuggingFace ``config.json``.

Supported ``architectures`` (first entry): DeepseekV3ForCausalLM,
DeepseekV2ForCausalLM, LlamaForCausalLM, MixtralForCausalLM,
Qwen2MoeForCausalLM and Qwen3MoeForCausalLM. The mapping is field by field;
anything the simulator needs but the file lacks is an error naming the field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .errors import ConfigError, special_file, unreadable

SUPPORTED = (
    "DeepseekV3ForCausalLM",
    "DeepseekV2ForCausalLM",
    "LlamaForCausalLM",
    "MixtralForCausalLM",
    "Qwen2MoeForCausalLM",
    "Qwen3MoeForCausalLM",
)


# The config.json key behind each model field, for error messages: a user fixes the file, so the message
# names the key in it (num_experts), not our field (n_routed_experts). Per architecture where they differ.
HF_KEYS = {
    "layers": "num_hidden_layers", "hidden": "hidden_size", "heads": "num_attention_heads", "vocab": "vocab_size",
    "tied_embeddings": "tie_word_embeddings", "attention_dropout": "attention_dropout",
    "q_lora_rank": "q_lora_rank", "kv_lora_rank": "kv_lora_rank", "qk_nope_head_dim": "qk_nope_head_dim",
    "qk_rope_head_dim": "qk_rope_head_dim", "v_head_dim": "v_head_dim", "dense_intermediate": "intermediate_size",
    "n_routed_experts": "n_routed_experts", "n_shared_experts": "n_shared_experts",
    "experts_per_token": "num_experts_per_tok", "moe_intermediate": "moe_intermediate_size",
    "first_k_dense": "first_k_dense_replace", "n_expert_groups": "n_group", "topk_groups": "topk_group",
    "mtp_depth": "num_nextn_predict_layers", "kv_heads": "num_key_value_heads", "head_dim": "head_dim",
    "sliding_window": "sliding_window",
}
HF_KEYS_BY_ARCH = {
    "MixtralForCausalLM": {"n_routed_experts": "num_local_experts", "moe_intermediate": "intermediate_size"},
    "Qwen2MoeForCausalLM": {"n_routed_experts": "num_experts", "n_shared_experts": "shared_expert_intermediate_size"},
    "Qwen3MoeForCausalLM": {"n_routed_experts": "num_experts", "n_shared_experts": "shared_expert_intermediate_size"},
}


def _checked(out: dict, arch: str, where: str) -> dict:
    """Build the model once here, so that a value the model refuses is reported by its config.json key."""
    from .config import ModelConfig, build

    try:
        build(ModelConfig, out, "model").validate()
    except ConfigError as e:
        field = e.field.split(".", 1)[1] if e.field.startswith("model.") else ""
        key = HF_KEYS_BY_ARCH.get(arch, {}).get(field) or HF_KEYS.get(field)
        if key is None:
            raise
        raise ConfigError(f"{where}.{key}", e.problem, e.allowed) from None
    return out


def _get(cfg: dict, key: str, where: str, default: Any = ...) -> Any:
    if key in cfg and cfg[key] is not None:
        return cfg[key]
    if default is ...:
        raise ConfigError(f"{where}.{key}", "missing from config.json")
    return default


def model_from_hf_config(path: str | Path) -> dict:
    """Return the plain-data ModelConfig fields for a HuggingFace config file."""
    where = f"model ({path})"
    if special_file(path):
        raise ConfigError("model", f"{path} is not a regular file", "a HuggingFace config.json file")
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("model", f"file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError("model", f"{path} is a directory", "a HuggingFace config.json file") from None
    except UnicodeDecodeError:
        raise ConfigError("model", f"{path} is not UTF-8 text", "a HuggingFace config.json file") from None
    except json.JSONDecodeError as e:
        raise ConfigError("model", f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except (ValueError, RecursionError) as e:  # an integer past Python's digit limit; nesting too deep
        raise ConfigError("model", f"{path} is not readable JSON ({unreadable(e)})") from None
    if not isinstance(cfg, dict):
        raise ConfigError("model", f"{path} holds a JSON {type(cfg).__name__}, not an object",
                          "a HuggingFace config.json file")
    archs = cfg.get("architectures") or []
    if not isinstance(archs, list):
        raise ConfigError(f"{where}.architectures", f"expected a list, got {archs!r}", '["' + SUPPORTED[0] + '"]')
    arch = archs[0] if archs else ""
    if arch not in SUPPORTED:
        raise ConfigError(f"{where}.architectures", f"unsupported {arch!r}", ", ".join(SUPPORTED))
    g = lambda k, d=...: _get(cfg, k, where, d)  # noqa: E731
    heads = g("num_attention_heads")
    out: dict[str, Any] = {
        "name": Path(path).parent.name or arch,
        "layers": g("num_hidden_layers"),
        "hidden": g("hidden_size"),
        "heads": heads,
        "vocab": g("vocab_size"),
        "tied_embeddings": g("tie_word_embeddings", False),  # checked as true/false when the model is built
        "attention_dropout": g("attention_dropout", 0.0) or 0.0,  # checked as a float when the model is built
        "mlp": "swiglu",
        "source": f"HuggingFace config {path} ({arch})",
    }
    if arch.startswith("Deepseek"):
        out.update(
            attention="mla",
            q_lora_rank=g("q_lora_rank", 0) or 0,
            kv_lora_rank=g("kv_lora_rank"),
            qk_nope_head_dim=g("qk_nope_head_dim"),
            qk_rope_head_dim=g("qk_rope_head_dim"),
            v_head_dim=g("v_head_dim"),
            dense_intermediate=g("intermediate_size"),
            n_routed_experts=g("n_routed_experts"),
            n_shared_experts=g("n_shared_experts", 0),
            experts_per_token=g("num_experts_per_tok"),
            moe_intermediate=g("moe_intermediate_size"),
            first_k_dense=g("first_k_dense_replace", 0),
            n_expert_groups=g("n_group", 1),
            topk_groups=g("topk_group", 1),
            mtp_depth=g("num_nextn_predict_layers", 0),
        )
        return _checked(out, arch, where)
    kv = g("num_key_value_heads", heads)
    out.update(
        attention="mha" if kv == heads else ("mqa" if kv == 1 else "gqa"),
        kv_heads=kv,
        head_dim=g("head_dim", 0) or 0,
        sliding_window=(g("sliding_window", 0) or 0) if g("use_sliding_window", arch == "MixtralForCausalLM") else 0,
    )
    if arch == "LlamaForCausalLM":
        out["dense_intermediate"] = g("intermediate_size")
    elif arch == "MixtralForCausalLM":
        out.update(
            n_routed_experts=g("num_local_experts"),
            experts_per_token=g("num_experts_per_tok"),
            moe_intermediate=g("intermediate_size"),
        )
    else:  # Qwen2-MoE / Qwen3-MoE
        shared = g("shared_expert_intermediate_size", 0) or 0
        moe_i = g("moe_intermediate_size")
        for key, v, least in (("moe_intermediate_size", moe_i, 1), ("shared_expert_intermediate_size", shared, 0)):
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= least):
                raise ConfigError(f"{where}.{key}", f"{v!r} is not a width", f"a whole number >= {least}")
        out.update(
            n_routed_experts=g("num_experts"),
            experts_per_token=g("num_experts_per_tok"),
            moe_intermediate=moe_i,
            # Qwen2-MoE has one shared expert of its own width; model it as whole experts of moe width.
            n_shared_experts=round(shared / moe_i) if shared else 0,
            dense_intermediate=g("intermediate_size", 0) or 0,
            first_k_dense=0,
        )
    return _checked(out, arch, where)
