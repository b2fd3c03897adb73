"""Memory of T causal-LM experts held full and as LoRA adapters, and PWE-MoE's router parameters per preset.

On a real-size decoder layout built on the meta device (no weights are allocated; shapes only): Qwen2-0.5B's
configuration by default (hidden 896, MLP 4864, 24 layers, 14 query / 2 key-value heads, 151936-token vocabulary,
tied embeddings). Counted, not measured:

    full experts      T whole checkpoints: T x (all parameters), in float32 and in bfloat16
    full, up-scaled   what PWE-MoE keeps of them after `release_experts=True`: T x (the preset's parameters)
    LoRA experts      T adapters of rank r on every linear layer of the blocks (q, k, v, o, gate, up, down):
                      T x r x (d_in + d_out) per layer, held exactly as factors (mooframe.adapters.peft)
    routers           PWE-MoE's trainable parameters: one router of 4T^2 + 3T per up-scaled module

The up-scaled modules are those `hf_auto.structure_presets` names from the model's own structure.

Usage: python benchmarks/hf_lm_memory.py [--tasks 3] [--rank 16] [--layout qwen2-0.5b|llama-1b]
"""

from __future__ import annotations

import argparse
import re

import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from mooframe.adapters.hf_auto import CausalLMBackbone, structure_presets

LAYOUTS = {
    "qwen2-0.5b": lambda: Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, tie_word_embeddings=True,
    ),
    "llama-1b": lambda: LlamaConfig(  # Llama-3.2-1B's layout
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, tie_word_embeddings=True,
    ),
}  # fmt: skip


def gib(n_values: int, bytes_per_value: int) -> str:
    return f"{n_values * bytes_per_value / 2**30:.3f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="qwen2-0.5b")
    args = parser.parse_args()
    t, r = args.tasks, args.rank
    with torch.device("meta"):
        backbone = CausalLMBackbone(AutoModelForCausalLM.from_config(LAYOUTS[args.layout]()))
    params = dict(backbone.named_parameters())
    total = sum(p.numel() for p in params.values())
    block_linears = [m for n, m in backbone.named_modules() if isinstance(m, nn.Linear) and ".layers." in n]
    lora = sum(r * (m.in_features + m.out_features) for m in block_linears)
    print(f"{args.layout}: {total / 1e6:.1f}M parameters; T = {t}, LoRA rank {r} on {len(block_linears)} linears")
    print(f"{'what is held':<34} {'values':>14} {'float32':>12} {'bfloat16':>12}")
    rows = [("base model", total), (f"{t} full experts", t * total), (f"{t} LoRA experts (factors)", t * lora)]
    presets = structure_presets(backbone)
    names = [n for n, _ in backbone.named_modules()]
    routed = {}
    for preset, patterns in presets.items():
        modules = [n for n in names if any(re.fullmatch(p, n) for p in patterns)]
        owned = {name for name in params if any(name.startswith(f"{m}.") for m in modules)}
        routed[preset] = len(modules)
        rows.append((f"{t} full experts, {preset} kept", t * sum(params[n].numel() for n in owned)))
    for label, n in rows:
        print(f"{label:<34} {n:>14,} {gib(n, 4):>12} {gib(n, 2):>12}")
    print(f"full / LoRA experts: {total / lora:.0f}x the values")
    print(f"{'preset':<16} {'modules':>8} {'router params (T=' + str(t) + ')':>22}")
    for preset, n_modules in routed.items():
        print(f"{preset:<16} {n_modules:>8} {n_modules * (4 * t * t + 3 * t):>22,}")


if __name__ == "__main__":
    main()
