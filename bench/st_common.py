"""Shared helpers for the bench scripts: load the sentence-transformers model offline, in f32."""
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EMBEDDER = os.path.join("..", "shared", "data", "models", "minilm-l6-v2")


def default_embedder():
    return str(ROOT / DEFAULT_EMBEDDER)


def load_texts(path):
    texts = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                texts.append(json.loads(line)["text"])
            except (ValueError, KeyError) as e:
                raise SystemExit(f"{path}:{i}: not a {{\"text\": ...}} line ({e})")
    if not texts:
        raise SystemExit(f"{path}: no texts")
    return texts


def load_sentence_transformer(embedder, threads):
    """The model directory's own sentence-transformers pipeline (Transformer, mean Pooling,
    Normalize), loaded offline; the f16 safetensors are loaded as float32."""
    # HF tokenizers' own thread pool fights PyTorch's OpenMP threads for the cores: on the 2-core
    # bench machine sentence-transformers at torch.set_num_threads(2) ran at 34 texts/s with the
    # tokenizer's parallelism on and 76 texts/s with it off (1024 chunks, batch 64). Off is the
    # fair baseline; set TOKENIZERS_PARALLELISM=true in the environment to measure the other way.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    torch.set_num_threads(threads)
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(embedder, device="cpu", local_files_only=True,
                                model_kwargs={"dtype": torch.float32})
    model = model.float().eval()
    return model


def st_encode(model, texts, batch_size):
    """Encode as the pipeline says: its Normalize module (if listed) L2-normalises, so no extra
    normalisation here. Returns float32 [n, d]."""
    import numpy as np
    import torch
    with torch.inference_mode():
        e = model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                         normalize_embeddings=False, show_progress_bar=False)
    return np.ascontiguousarray(e, dtype=np.float32)
