#!/usr/bin/env python3
"""Serving under load (issue 5): `retro serve` against a PyTorch/transformers server of the same model, on loopback.

Both serve SmolLM2-135M-Instruct as the same f32 tensors: ours loads a Retro checkpoint made from the GGUF by
`retro model retrofit` (no --db, so its plain decoder runs, exactly the GPT), the baseline builds HF
`LlamaForCausalLM` from that checkpoint's decoder config and tensors (as bench/retro_forward_vs_torch.py does) and
serves it from Python's ThreadingHTTPServer with one model behind a lock, as ours has one model thread: both answer
`POST /v1/completions` with greedy decoding that stops at the end-of-text tokens, and report usage counts. Each
server gets the same --threads.

The load: --requests requests (ChatML prompts built from questions, --max-tokens each), at most --concurrency in
flight, from a thread pool here. Reported per server: wall time, requests/s, completion tokens/s (the servers' own
usage counts), p50 / p99 latency of a request (send to last byte), and whether both gave the same texts.

Usage (from the repository root, after `cargo build --release -p retro-cli` and `bash bench/setup.sh`):
    bench/.venv/bin/python bench/serve_load.py [--threads 2] [--requests 24] [--concurrency 4] [--max-tokens 32]
        [--torch-first] [--json-out bench/out/results.jsonl]
"""
import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join("..", "shared", "data")

QUESTIONS = [
    "What is the capital of France?", "Name three primary colors.", "Who wrote Hamlet?",
    "What is photosynthesis?", "How many legs does a spider have?", "What is the largest planet?",
    "Explain gravity in one sentence.", "What language is spoken in Brazil?", "Who painted the Mona Lisa?",
    "What is the boiling point of water?", "Name a famous bridge.", "What do bees make?",
]

BASELINE = r'''
import json, os, sys, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM
ckpt, threads = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(threads)
cfg = json.load(open(os.path.join(ckpt, "config.json")))["decoder"]
model = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
w = load_file(os.path.join(ckpt, "model.safetensors"))
model.load_state_dict({k: v for k, v in w.items() if k in model.state_dict()}, strict=False)
model.tie_weights()
tok = Tokenizer.from_file(os.path.join(ckpt, "tokenizer.json"))
stop = [i for i in (tok.token_to_id(t) for t in ["<|endoftext|>", "<|im_end|>"]) if i is not None]
lock = threading.Lock()

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ids = tok.encode(body["prompt"], add_special_tokens=False).ids
        with lock, torch.inference_mode():
            out = model.generate(torch.tensor([ids]), max_new_tokens=body["max_tokens"], do_sample=False,
                                 eos_token_id=stop, pad_token_id=stop[0])
        new = out[0, len(ids):].tolist()
        text = tok.decode(new, skip_special_tokens=True)
        data = json.dumps({"choices": [{"text": text}], "usage": {"prompt_tokens": len(ids),
                           "completion_tokens": len(new), "total_tokens": len(ids) + len(new)}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(f"listening on http://127.0.0.1:{srv.server_address[1]}", file=sys.stderr, flush=True)
srv.serve_forever()
'''


def start(cmd):
    """Starts a server process; returns (process, base URL) once it prints its address."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    seen = []
    for line in p.stderr:
        if "listening on http://" in line:
            url = "http://" + line.split("listening on http://")[1].strip()
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, url
        seen.append(line)
    raise SystemExit(f"{cmd[0]} exited before listening:\n{''.join(seen)}")


def post(url, body):
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=3600) as r:
        data = json.loads(r.read())
    return time.perf_counter() - t, data


def percentile(xs, q):
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[i]


def load(url, prompts, a):
    post(url, {"prompt": prompts[0], "max_tokens": 2})  # warm-up
    load_avg = os.getloadavg()[0]
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(a.concurrency) as pool:
        results = list(pool.map(lambda p: post(url, {"prompt": p, "max_tokens": a.max_tokens}), prompts))
    wall = time.perf_counter() - t0
    lat = [r[0] for r in results]
    tokens = sum(r[1]["usage"]["completion_tokens"] for r in results)
    return {"wall_s": wall, "requests_per_s": len(prompts) / wall, "completion_tokens": tokens,
            "tokens_per_s": tokens / wall, "p50_s": percentile(lat, 50), "p99_s": percentile(lat, 99),
            "load_avg_before": load_avg, "texts": [r[1]["choices"][0]["text"] for r in results]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--retro", default=os.path.join("target", "release", "retro"))
    ap.add_argument("--ckpt", default=os.path.join("bench", "out", "smollm2-retro"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--torch-first", action="store_true", help="load the baseline first (to see order effects)")
    ap.add_argument("--json-out", default=os.path.join("bench", "out", "results.jsonl"))
    a = ap.parse_args()
    os.chdir(ROOT)
    if not os.path.isdir(a.ckpt):
        subprocess.run([a.retro, "model", "retrofit", "--from", os.path.join(SHARED, "models", "smollm2-135m-instruct"),
                        "--out", a.ckpt], check=True)
    prompts = [f"<|im_start|>user\n{QUESTIONS[i % len(QUESTIONS)]}<|im_end|>\n<|im_start|>assistant\n"
               for i in range(a.requests)]
    out = {"bench": "serve_load", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "threads": a.threads,
           "requests": a.requests, "concurrency": a.concurrency, "max_tokens": a.max_tokens}
    servers = {
        "ours": [a.retro, "--threads", str(a.threads), "serve", "--model", a.ckpt, "--port", "0",
                 "--queue", str(a.requests), "--max-tokens-cap", str(a.max_tokens)],
        "torch": [sys.executable, "-c", BASELINE, a.ckpt, str(a.threads)],
    }
    out["order"] = ["torch", "ours"] if a.torch_first else ["ours", "torch"]
    for name in out["order"]:
        cmd = servers[name]
        p, url = start(cmd)
        try:
            out[name] = load(url, prompts, a)
        finally:
            p.terminate()
            p.wait(timeout=60)
        r = out[name]
        print(f"{name}: {r['wall_s']:.1f} s, {r['requests_per_s']:.2f} req/s, {r['tokens_per_s']:.1f} tokens/s, "
              f"p50 {r['p50_s']:.2f} s, p99 {r['p99_s']:.2f} s (load avg before {r['load_avg_before']:.1f})")
    out["same_texts"] = out["ours"].pop("texts") == out["torch"].pop("texts")
    out["ratio_tokens_per_s"] = out["ours"]["tokens_per_s"] / out["torch"]["tokens_per_s"]
    print(f"ours / torch tokens/s: {out['ratio_tokens_per_s']:.2f}; same texts: {out['same_texts']}")
    with open(a.json_out, "a") as f:
        f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
