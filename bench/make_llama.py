#!/usr/bin/env python3
"""Writes an HF Llama directory (config.json, model.safetensors, tokenizer.json) with seeded random weights, so that
the train-step benchmark can run at the retro-fitting experiment's size (experiments/retrofit/run.sh: hidden 128,
12 layers, 4 query / 2 key-value heads, SmolLM2's vocabulary and tokenizer) without pretraining it first. Timing does
not depend on the values, only the shapes.

Usage (from the repository root):
    bench/.venv/bin/python bench/make_llama.py --out bench/out/experiment-llama [--hidden 128] [--layers 12]
    target/release/retro model retrofit --from bench/out/experiment-llama --out bench/out/experiment-retro
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--hidden", type=int, default=128)
ap.add_argument("--layers", type=int, default=12)
ap.add_argument("--heads", type=int, default=4)
ap.add_argument("--kv-heads", type=int, default=2)
ap.add_argument("--tokenizer", default=os.path.join("..", "shared", "data", "models", "smollm2-135m-instruct",
                                                    "tokenizer.json"))
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()

vocab = 49152
head_dim = a.hidden // a.heads
config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": a.hidden,
          "intermediate_size": 4 * a.hidden, "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
          "num_key_value_heads": a.kv_heads, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": vocab,
          "tie_word_embeddings": True, "max_position_embeddings": 2048}
g = torch.Generator().manual_seed(a.seed)


def normal(*shape):
    return (torch.randn(*shape, generator=g) * 0.02).contiguous()


tensors = {"model.embed_tokens.weight": normal(vocab, a.hidden), "model.norm.weight": torch.ones(a.hidden)}
for i in range(a.layers):
    p = f"model.layers.{i}."
    tensors |= {
        p + "input_layernorm.weight": torch.ones(a.hidden),
        p + "post_attention_layernorm.weight": torch.ones(a.hidden),
        p + "self_attn.q_proj.weight": normal(a.heads * head_dim, a.hidden),
        p + "self_attn.k_proj.weight": normal(a.kv_heads * head_dim, a.hidden),
        p + "self_attn.v_proj.weight": normal(a.kv_heads * head_dim, a.hidden),
        p + "self_attn.o_proj.weight": normal(a.hidden, a.heads * head_dim),
        p + "mlp.gate_proj.weight": normal(4 * a.hidden, a.hidden),
        p + "mlp.up_proj.weight": normal(4 * a.hidden, a.hidden),
        p + "mlp.down_proj.weight": normal(a.hidden, 4 * a.hidden),
    }
os.makedirs(a.out, exist_ok=True)
save_file(tensors, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
with open(os.path.join(a.out, "config.json"), "w") as f:
    json.dump(config, f, indent=1)
shutil.copy(a.tokenizer, os.path.join(a.out, "tokenizer.json"))
print(f"wrote {a.out}: {sum(t.numel() for t in tensors.values())} parameters")
