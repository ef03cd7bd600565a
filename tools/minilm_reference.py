#!/usr/bin/env python3
"""An independent reference for haca-exec's all-MiniLM-L6-v2 embeddings (crates/haca-exec/src/embed.rs).

Plain numpy and the standard library: no torch, no candle, no `tokenizers`. The safetensors file is
parsed by hand (8-byte little-endian header length, a JSON header, raw little-endian F32 data), the
BERT WordPiece tokenizer is written out here from the model's vocab (BertNormalizer: clean text,
spaces around CJK characters, lowercase and strip accents; BertPreTokenizer: split on whitespace and
punctuation; greedy longest-match WordPiece with `##` continuations), and the encoder is the
6-layer BERT written as numpy matrix products. Embeddings are sentence-transformers' recipe: mean of
the last hidden states over the tokens, L2-normalised.

Usage:
  tools/minilm_reference.py MODEL_DIR OUT.json "sentence" ["sentence" ...]
  tools/minilm_reference.py MODEL_DIR OUT.json            (the fixture's default sentences)

The fixture crates/haca-exec/tests (fixtures/memory/minilm_reference.json) was written by:
  python3 tools/minilm_reference.py ~/.haca/models/all-MiniLM-L6-v2 fixtures/memory/minilm_reference.json
"""

import json
import math
import struct
import sys
import unicodedata

import numpy as np

MAX_TOKENS = 256

DEFAULT_SENTENCES = [
    "I moved to Lisbon last spring and work remotely as a data engineer.",
    "My sister Ana is allergic to peanuts.",
    "Where does the user live now?",
    "Naïve café owners in Zürich don't open before 9:30am!",
]


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            continue
        start, end = meta["data_offsets"]
        arr = np.frombuffer(data[base + start : base + end], dtype="<f4")
        tensors[name] = arr.reshape(meta["shape"]).astype(np.float64)
    return tensors


# --- BERT WordPiece tokenizer -------------------------------------------------------------


def is_control(ch):
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def is_cjk(cp):
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def normalize(text):
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or is_control(ch):
            continue
        if is_whitespace(ch):
            out.append(" ")
        elif is_cjk(cp):
            out.append(" " + ch + " ")
        else:
            out.append(ch)
    text = "".join(out)
    # lowercase and (strip_accents unset, so following lowercase) strip accents
    text = unicodedata.normalize("NFD", text)
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    return text.lower()


def pre_tokenize(text):
    words = []
    for chunk in text.split():
        cur = ""
        for ch in chunk:
            if is_punctuation(ch):
                if cur:
                    words.append(cur)
                    cur = ""
                words.append(ch)
            else:
                cur += ch
        if cur:
            words.append(cur)
    return words


def wordpiece(word, vocab):
    if len(word) > 100:
        return [vocab["[UNK]"]]
    ids = []
    start = 0
    while start < len(word):
        end = len(word)
        found = None
        while start < end:
            piece = word[start:end]
            if start > 0:
                piece = "##" + piece
            if piece in vocab:
                found = vocab[piece]
                break
            end -= 1
        if found is None:
            return [vocab["[UNK]"]]
        ids.append(found)
        start = end
    return ids


def tokenize(text, vocab):
    ids = []
    for w in pre_tokenize(normalize(text)):
        ids.extend(wordpiece(w, vocab))
    ids = ids[: MAX_TOKENS - 2]
    return [vocab["[CLS]"]] + ids + [vocab["[SEP]"]]


# --- BERT encoder -------------------------------------------------------------------------


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def linear(x, t, name):
    return x @ t[name + ".weight"].T + t[name + ".bias"]


def encode(ids, t, cfg):
    n = len(ids)
    eps = cfg["layer_norm_eps"]
    heads = cfg["num_attention_heads"]
    h = cfg["hidden_size"]
    hd = h // heads
    x = (
        t["embeddings.word_embeddings.weight"][ids]
        + t["embeddings.position_embeddings.weight"][:n]
        + t["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q = linear(x, t, p + "attention.self.query").reshape(n, heads, hd).transpose(1, 0, 2)
        k = linear(x, t, p + "attention.self.key").reshape(n, heads, hd).transpose(1, 0, 2)
        v = linear(x, t, p + "attention.self.value").reshape(n, heads, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(n, h)
        a = linear(ctx, t, p + "attention.output.dense")
        x = layer_norm(
            a + x,
            t[p + "attention.output.LayerNorm.weight"],
            t[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        m = gelu(linear(x, t, p + "intermediate.dense"))
        o = linear(m, t, p + "output.dense")
        x = layer_norm(o + x, t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"], eps)
    return x


def embed(text, t, cfg, vocab):
    ids = tokenize(text, vocab)
    hidden = encode(ids, t, cfg)
    v = hidden.mean(0)
    return ids, v / np.linalg.norm(v)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    model_dir, out = sys.argv[1], sys.argv[2]
    sentences = sys.argv[3:] or DEFAULT_SENTENCES
    with open(f"{model_dir}/config.json") as f:
        cfg = json.load(f)
    with open(f"{model_dir}/vocab.txt", encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    t = load_safetensors(f"{model_dir}/model.safetensors")
    cases = []
    for s in sentences:
        ids, v = embed(s, t, cfg, vocab)
        cases.append({"text": s, "token_ids": ids, "embedding": [round(float(x), 7) for x in v]})
    doc = {
        "model": "all-MiniLM-L6-v2",
        "written_by": "tools/minilm_reference.py (numpy, float64, hand-parsed safetensors, "
        "hand-written WordPiece)",
        "cases": cases,
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    for c in cases:
        print(len(c["token_ids"]), c["text"])


if __name__ == "__main__":
    main()
