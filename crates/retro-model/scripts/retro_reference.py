#!/usr/bin/env python3
"""Independent float64 numpy forward of a Retro model, transcribed from Megatron's legacy Retro code
(`megatron/legacy/model/transformer.py`: `ParallelTransformerLayer.forward`,
`retro_encoder_cross_attention`, `retro_decoder_cross_attention`; shared reference §1.3-1.7), in
Megatron's sequence-first layout [ns, bs, d] with its pad / reshape / permute steps, so that it shares
no code or layout with the Rust implementation.

Usage: python3 retro_reference.py CHECKPOINT_DIR INPUTS_JSON OUT_JSON
  CHECKPOINT_DIR: config.json + model.safetensors written by `RetroWeights::save`
  INPUTS_JSON: {"cases": [{"ids": [[...]], "neighbors": [[[[...]]]]}]}  (neighbours (b, l, k, r))
  OUT_JSON: INPUTS_JSON plus "logits" (b, ns, vocab) per case, float64 rounded to 6 decimals.

Needs numpy and safetensors. Regenerate the fixture with
`cargo test --release -p retro-model --test retro_numpy -- --ignored` (see that test).
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


class Model:
    def __init__(self, ckpt):
        self.cfg = json.load(open(f"{ckpt}/config.json"))
        self.W = {k: v.astype(np.float64) for k, v in load_file(f"{ckpt}/model.safetensors").items()}
        d = self.cfg["decoder"]
        assert d.get("rope_layout", "rotate_half") == "rotate_half"
        self.d = d
        self.nh = d["num_attention_heads"]
        self.nkv = d.get("num_key_value_heads") or self.nh
        self.hd = d.get("head_dim") or d["hidden_size"] // self.nh
        self.eps = d["rms_norm_eps"]
        self.m = self.cfg["chunk_len"]
        self.k = self.cfg["num_neighbors"]
        self.r = self.cfg["retrieved_len"]
        self.retro_layers = self.cfg["retro_layer_numbers"]  # 1-based
        self.gate = self.cfg["gate"]

    def lin(self, name, x):
        return x @ self.W[name + ".weight"].T

    def norm(self, name, x):
        return rms_norm(x, self.W[name + ".weight"], self.eps)

    # -- attention, sequence-first: x [sq, B, d], ctx [sk, B, d] ----------------------------------
    def attention(self, p, x, ctx, causal=False, rope=False):
        sq, B, _ = x.shape
        sk = ctx.shape[0]
        q = self.lin(p + ".q_proj", x).reshape(sq, B, self.nh, self.hd)
        k = self.lin(p + ".k_proj", ctx).reshape(sk, B, self.nkv, self.hd)
        v = self.lin(p + ".v_proj", ctx).reshape(sk, B, self.nkv, self.hd)
        if rope:
            q, k = self.rope(q), self.rope(k)
        rep = self.nh // self.nkv
        k = np.repeat(k, rep, axis=2)  # head h uses kv head h // rep (HF repeat_kv)
        v = np.repeat(v, rep, axis=2)
        s = np.einsum("qbhd,kbhd->bhqk", q, k) / np.sqrt(self.hd)
        if causal:
            s = s + np.triu(np.full((sq, sk), -np.inf), 1)
        a = np.einsum("bhqk,kbhd->qbhd", softmax(s), v).reshape(sq, B, self.nh * self.hd)
        return self.lin(p + ".o_proj", a)

    def rope(self, x):
        # HF rotate_half: pairs (i, i + hd/2), angle p * theta^(-2i/hd).
        ns = x.shape[0]
        half = self.hd // 2
        inv = self.d["rope_theta"] ** (-np.arange(half) * 2.0 / self.hd)
        ang = np.arange(ns)[:, None] * inv[None, :]
        cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, None, :]
        sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, None, :]
        x1, x2 = x[..., :half], x[..., half:]
        return x * cos + np.concatenate([-x2, x1], -1) * sin

    def mlp(self, p, x):
        return self.lin(p + ".down_proj", silu(self.lin(p + ".gate_proj", x)) * self.lin(p + ".up_proj", x))

    # -- encoder (legacy ParallelTransformer built for the retriever) ------------------------------
    def encoder(self, hidden, chunked_output):
        # hidden: [r, bs*l*k, d]; chunked_output: [m, bs*l, d]
        for i in range(self.cfg["encoder_layers"]):
            p = f"model.encoder.layers.{i}"
            norm_output = self.norm(p + ".input_layernorm", hidden)
            norm_input = hidden + self.attention(p + ".self_attn", norm_output, norm_output)
            norm_output = self.norm(p + (".pre_cross_attn_layernorm" if i == 0 else ".post_attention_layernorm"), norm_input)
            if i == 0:  # retro_encoder_cross_attention
                ns, bs, d = norm_output.shape
                chunked_outputs = norm_output.reshape(self.r, -1, self.k, d)
                chunked_before = norm_input.reshape(self.r, -1, self.k, d)
                inputs, outputs = [], []
                for n in range(self.k):
                    att = self.attention(p + ".cross_attn", chunked_outputs[:, :, n], chunked_output)
                    li = att + chunked_before[:, :, n]  # legacy: pre-norm residual
                    inputs.append(li)
                    outputs.append(self.norm(p + ".post_attention_layernorm", li))
                norm_input = np.stack(inputs, axis=1).reshape(ns, bs, d)
                norm_output = np.stack(outputs, axis=1).reshape(ns, bs, d)
            hidden = norm_input + self.mlp(p + ".mlp", norm_output)
        return hidden  # no final norm

    # -- decoder ------------------------------------------------------------------------------------
    def forward(self, ids, neighbors):
        ids = np.asarray(ids)  # (bs, ns)
        bs, ns = ids.shape
        m, k, r = self.m, self.k, self.r
        l = int(np.ceil(ns / m))
        E = self.W["model.embed_tokens.weight"]
        hidden = E[ids].transpose(1, 0, 2)  # [ns, bs, d]
        d = hidden.shape[-1]
        retriever_output = None
        if neighbors is not None:
            nb = np.asarray(neighbors)
            assert nb.shape == (bs, l, k, r)
            # [bs*l*k, r] (b -> chunk -> neighbour) -> embedded [r, bs*l*k, d]
            retriever_input = E[nb.reshape(bs * l * k, r)].transpose(1, 0, 2)
        for i in range(self.d["num_hidden_layers"]):
            p = f"model.layers.{i}"
            norm_output = self.norm(p + ".input_layernorm", hidden)
            norm_input = hidden + self.attention(p + ".self_attn", norm_output, norm_output, causal=True, rope=True)
            is_retro = (i + 1) in self.retro_layers and neighbors is not None
            if is_retro:
                norm_output = self.norm(p + ".pre_cross_attn_layernorm", norm_input)
                # retro_decoder_cross_attention
                if retriever_output is None:  # first Retro layer: retro_decoder_with_retriever
                    first_ns = ns % m
                    if first_ns > 0:
                        first_chunk = np.pad(norm_output[:first_ns], ((0, m - first_ns), (0, 0), (0, 0)))
                        chunked_output = np.concatenate([first_chunk, norm_output[first_ns:]], 0)
                    else:
                        chunked_output = norm_output
                    chunked_output = chunked_output.reshape(l, m, bs, d).transpose(1, 2, 0, 3).reshape(m, bs * l, d)
                    retriever_output = self.encoder(retriever_input, chunked_output)  # [r, bs*l*k, d]
                    retriever_output = retriever_output.reshape(r * k, bs * l, d)
                pad = (ns - 1) % m
                attending_chunks = norm_output[pad:]
                padded_chunks = np.pad(attending_chunks, ((0, m - 1), (0, 0), (0, 0)))
                padded_chunked_output = padded_chunks.reshape(l, m, bs, d).transpose(1, 2, 0, 3).reshape(m, bs * l, d)
                attention_output = self.attention(p + ".cross_attn", padded_chunked_output, retriever_output)
                out = attention_output.reshape(m, bs, l, d).transpose(2, 0, 1, 3).reshape(m * l, bs, d)
                out = np.pad(out, ((pad, 0), (0, 0), (0, 0)))[:ns]
                norm_input = self.gate * out + norm_input
            norm_output = self.norm(p + ".post_attention_layernorm", norm_input)
            hidden = norm_input + self.mlp(p + ".mlp", norm_output)
        hidden = self.norm("model.norm", hidden)
        head = E if self.d.get("tie_word_embeddings") else self.W["lm_head.weight"]
        return (hidden @ head.T).transpose(1, 0, 2)  # (bs, ns, vocab)


def main():
    ckpt, inputs, out = sys.argv[1:4]
    model = Model(ckpt)
    doc = json.load(open(inputs))
    for case in doc["cases"]:
        logits = model.forward(case["ids"], case.get("neighbors"))
        case["logits"] = np.round(logits, 6).tolist()
    json.dump(doc, open(out, "w"))


if __name__ == "__main__":
    main()
