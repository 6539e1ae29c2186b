"""
train.py - trains autoglm-tiny, the default model `make serve` ships: a
Llama-architecture decoder (RMSNorm, rotary embeddings, grouped-query
attention, SwiGLU, tied input/output embeddings) learned from the King James
Bible (tools/train/kjv-text) on the CPU, from a fixed seed.

The vocabulary is Llama 2's (32,000 SentencePiece-style tokens from the npm
package the test fixtures use): a real vocabulary means `autoglm tokenize`,
already tested equal to Hugging Face's on it, is the only tokenizer involved,
and the shipped file is an ordinary Llama GGUF any Llama runtime reads.  Text
is tokenized by the autoglm binary itself, so training sees exactly the ids
serving will.

The output is a Hugging Face directory (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json): `autoglm convert` is the one path to
GGUF.  The math follows transformers' LlamaForCausalLM (rotate-half RoPE; the
converter permutes Q/K for GGUF as llama.cpp's does).  Progress goes to
loss.csv: step, tokens, train loss, learning rate, seconds, held-out loss.

usage: python3 train.py --autoglm BIN --vocab-gguf F.gguf --tokenizer-dir D
                        --data DIR --out DIR [--steps N] [--threads N] [--seed S]
"""
import argparse
import csv
import json
import math
import os
import shutil
import struct
import subprocess
import time

import numpy as np
import torch
import torch.nn.functional as F

CONFIG = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=8,
              num_key_value_heads=4, vocab_size=32000, max_position_embeddings=512, rms_norm_eps=1e-5,
              rope_theta=10000.0, tie_word_embeddings=True)
SEQ = 256          # training window, tokens
BATCH = 16         # windows per step
BOS = 1            # Llama 2's <s>


class RMSNorm(torch.nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d, self.h, self.kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = d // self.h
        self.input_layernorm = RMSNorm(d, c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(d, c["rms_norm_eps"])
        lin = lambda i, o: torch.nn.Linear(i, o, bias=False)
        self.q_proj, self.k_proj = lin(d, self.h * self.hd), lin(d, self.kv * self.hd)
        self.v_proj, self.o_proj = lin(d, self.kv * self.hd), lin(self.h * self.hd, d)
        f = c["intermediate_size"]
        self.gate_proj, self.up_proj, self.down_proj = lin(d, f), lin(d, f), lin(f, d)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.kv, self.hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        rep = self.h // self.kv  # query head i reads key/value head i // rep, as transformers' repeat_kv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd) + mask
        a = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + self.o_proj(a)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Model(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = torch.nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = torch.nn.ModuleList(Block(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        hd = c["hidden_size"] // c["num_attention_heads"]
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        ang = torch.outer(torch.arange(c["max_position_embeddings"], dtype=torch.float64), inv)
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)
        for name, p in self.named_parameters():  # GPT-2's init: residual outputs scaled by depth
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * c["num_hidden_layers"]) if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                torch.nn.init.normal_(p, 0.0, std)

    def forward(self, ids):
        T = ids.shape[1]
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, self.cos[:T], self.sin[:T], mask)
        return self.norm(x) @ self.embed_tokens.weight.t()  # tied head


def tokenize(autoglm, gguf, path):
    out = subprocess.run([autoglm, "tokenize", "--model", gguf, "--no-bos", path], check=True,
                         capture_output=True, text=True).stdout
    return np.array(out.split(), dtype=np.int64)


def windows(tokens, starts):
    """Window i predicts tokens[s : s + SEQ] from <s> followed by the tokens before each."""
    y = np.stack([tokens[s:s + SEQ] for s in starts])
    x = np.concatenate([np.full((len(starts), 1), BOS), y[:, :-1]], axis=1)
    return torch.from_numpy(x), torch.from_numpy(y)


@torch.no_grad()
def heldout_loss(model, tokens):
    """Mean loss over consecutive windows of the held-out text, each starting with <s>."""
    model.eval()
    starts = list(range(0, len(tokens) - SEQ, SEQ))
    total = 0.0
    for i in range(0, len(starts), BATCH):
        x, y = windows(tokens, starts[i:i + BATCH])
        total += F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").item()
    model.train()
    return total / (len(starts) * SEQ)


def save_safetensors(model, path):
    """The safetensors layout: u64 header length, JSON header, then the raw tensors (F32, little-endian)."""
    def hf_name(k):  # transformers' names: attention projections under self_attn, the FFN under mlp
        for group, parts in (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
                             ("mlp", ("gate_proj", "up_proj", "down_proj"))):
            for p in parts:
                k = k.replace(f".{p}.", f".{group}.{p}.")
        return "model." + k
    tensors = {hf_name(k): v.detach().contiguous().float().numpy() for k, v in model.state_dict().items()}
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        b = tensors[name].tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--autoglm", required=True)
    ap.add_argument("--vocab-gguf", required=True, help="any GGUF with Llama 2's vocabulary, to tokenize with")
    ap.add_argument("--tokenizer-dir", required=True, help="Llama 2's tokenizer.json and tokenizer_config.json")
    ap.add_argument("--data", required=True, help="train.txt and heldout.txt (tools/train/kjv-text)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1611)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-every", type=int, default=80)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    train = tokenize(a.autoglm, a.vocab_gguf, os.path.join(a.data, "train.txt"))
    held = tokenize(a.autoglm, a.vocab_gguf, os.path.join(a.data, "heldout.txt"))
    print(f"train: {len(train)} tokens, held-out: {len(held)} tokens", flush=True)
    model = Model(CONFIG)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, {a.steps} steps of {BATCH} x {SEQ} tokens", flush=True)
    decay = [p for p in model.parameters() if p.dim() == 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95))
    warmup = max(1, a.steps // 20)
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    with open(os.path.join(a.out, "loss.csv"), "w", newline="") as f:
        log = csv.writer(f)
        log.writerow(["step", "tokens", "train_loss", "lr", "seconds", "heldout_loss"])
        for step in range(1, a.steps + 1):
            # linear warm-up, then cosine decay to a tenth
            lr = a.lr * (step / warmup if step <= warmup else
                         0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / (a.steps - warmup))))
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = windows(train, rng.integers(0, len(train) - SEQ, BATCH))
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            held_loss = heldout_loss(model, held) if step % a.eval_every == 0 or step == a.steps else None
            log.writerow([step, step * BATCH * SEQ, f"{loss.item():.4f}", f"{lr:.6f}", f"{time.time() - t0:.1f}",
                          "" if held_loss is None else f"{held_loss:.4f}"])
            f.flush()
            if held_loss is not None or step % 50 == 0:
                extra = f", held-out loss {held_loss:.3f} (ppl {math.exp(held_loss):.1f})" if held_loss else ""
                print(f"step {step}/{a.steps}: loss {loss.item():.3f}, lr {lr:.5f}, {time.time() - t0:.0f} s{extra}",
                      flush=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float32",
                   "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", **CONFIG}, f, indent=1)
    save_safetensors(model, os.path.join(a.out, "model.safetensors"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(a.tokenizer_dir, name), a.out)
    print(f"wrote {a.out} in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
