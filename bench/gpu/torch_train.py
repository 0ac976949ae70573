#!/usr/bin/env python3
"""PyTorch peer of `tsclip bench train` and `tsclip bench infer` (bench/gpu.sh runs both in one call).

CLIP ViT-B/32 written out in plain PyTorch with the original architecture: patch conv without bias,
class token, learned positional embeddings, pre-LN blocks with QuickGELU, ln_post on the class
token, the causal text tower pooled at end-of-text, logit scale ln(1/0.07), open_clip's symmetric
contrastive loss, AdamW (betas 0.9/0.98, eps 1e-6, weight decay 0.2 on matrices only) and the
logit scale clamped to [0, ln 100] after each step. Attention is F.scaled_dot_product_attention on
the packed q/k/v projection, batch first (the original's nn.MultiheadAttention in sequence-first
layout does the same arithmetic), with one backend chosen by --sdpa (default: the memory-efficient
kernel, the fastest forward+backward at both towers' shapes on H100 in ../shared/ANCHORS.md).

Same work as tsclip's side: the same random captions (the longest has --caption-tokens tokens, the
others between half and all of it, end-of-text the largest id) and the text tower runs only as far
as the longest caption; the batch is copied from (pageable) host memory each step as tsclip's
Trainer does. Variants, each with a fresh model and optimizer and its own peak-memory count:
  eager           bf16 autocast (fp32 master weights), host batch copied each step
  eager-device    the same with the batch already on the GPU (no copy in the step)
  eager-77        the original code's work: all 77 text positions (ANCHORS.md's 77-token row)
  eager-fp32      no autocast, TF32 off (float32 accuracy, like tsclip's default fp32)
  infer-bf16 / infer-fp32   image encoder forward, no grad, batch --infer-batch on the GPU
  compile         torch.compile of the model, bf16, host batch; compile_s is the first step's time
They run in --variants order, the most wanted first; compile runs only when --budget-s leaves room
for its compilation (about a minute on H100). A line is printed per variant as soon as it is
measured, so a timeout loses only the variants after it.

Output: one JSON line per variant, {"tool": "torch", "kind": "train"|"infer", "variant": ..., ...};
bench/gpu/report.py pairs them with tsclip's. Lines starting with '#' are notes.
On a machine without a GPU, `--device cpu --model tiny` checks that it runs (tiny-vit's shapes).
"""
import argparse
import contextlib
import json
import math
import sys
import time

T_START = time.perf_counter()  # before torch's import, which takes seconds of the budget

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# name: (image, patch, width, layers, heads, text ctx, vocab, text width, text heads, text layers, embed)
CONFIGS = {
    "vit-b-32": (224, 32, 768, 12, 12, 77, 49408, 512, 8, 12, 512),
    "tiny": (32, 4, 96, 3, 2, 32, 1024, 96, 2, 3, 64),
}


def note(msg):
    print(f"# {msg}", flush=True)


class LayerNorm(nn.LayerNorm):
    """The original's: computed in float32, returned in the input's dtype (bf16 under autocast)."""

    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


def attention(q, k, v, causal):
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    # PyTorch before 2.0 (only for checking this script on a CPU)
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if causal:
        n = s.shape[-1]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=s.device).triu(1), float("-inf"))
    return s.softmax(-1) @ v


class Block(nn.Module):
    def __init__(self, width, heads, causal):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.ln_1 = LayerNorm(width)
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)
        self.ln_2 = LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), QuickGELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        B, S, D = x.shape
        qkv = self.in_proj(self.ln_1(x)).view(B, S, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        o = attention(qkv[0], qkv[1], qkv[2], self.causal)
        x = x + self.out_proj(o.transpose(1, 2).reshape(B, S, D))
        return x + self.mlp(self.ln_2(x))


class CLIP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        image, patch, width, layers, heads, ctx, vocab, twidth, theads, tlayers, embed = cfg
        grid = image // patch
        s = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(s * torch.randn(width))
        self.vis_pos = nn.Parameter(s * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.visual = nn.Sequential(*[Block(width, heads, False) for _ in range(layers)])
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(s * torch.randn(width, embed))
        self.token_embedding = nn.Embedding(vocab, twidth)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.txt_pos = nn.Parameter(0.01 * torch.randn(ctx, twidth))
        self.text = nn.Sequential(*[Block(twidth, theads, True) for _ in range(tlayers)])
        self.ln_final = LayerNorm(twidth)
        self.text_projection = nn.Parameter(twidth ** -0.5 * torch.randn(twidth, embed))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, x):
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], 1) + self.vis_pos.to(x.dtype))
        return self.ln_post(self.visual(x)[:, 0]) @ self.proj

    def encode_text(self, tokens):
        L = tokens.shape[1]
        x = self.token_embedding(tokens) + self.txt_pos[:L]
        x = self.ln_final(self.text(x))
        return x[torch.arange(x.shape[0], device=x.device), tokens.argmax(-1)] @ self.text_projection

    def forward(self, images, tokens):
        i = F.normalize(self.encode_image(images), dim=-1)
        t = F.normalize(self.encode_text(tokens), dim=-1)
        logits = self.logit_scale.exp() * i @ t.t()
        labels = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def random_tokens(batch, ctx, vocab, longest, gen):
    """Start token, random ids, end-of-text (the largest id) at each caption's length; the first caption is the longest."""
    out = torch.zeros(batch, ctx, dtype=torch.long)
    lo = max(2, math.ceil(longest / 2))
    lengths = torch.randint(lo, longest + 1, (batch,), generator=gen)
    lengths[0] = longest
    for b, n in enumerate(lengths.tolist()):
        out[b, 0] = vocab - 2
        out[b, 1 : n - 1] = torch.randint(1, vocab - 2, (n - 2,), generator=gen)
        out[b, n - 1] = vocab - 1
    return out


def optimizer(model, fused):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": 0.2}, {"params": no_decay, "weight_decay": 0.0}]
    kw = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=1e-5, betas=(0.9, 0.98), eps=1e-6, **kw)


def set_sdpa(name):
    """Only the named SDPA backend enabled ('default' leaves PyTorch's choice)."""
    if name == "default" or not hasattr(torch.backends.cuda, "enable_flash_sdp"):
        return
    setters = {
        "flash": "enable_flash_sdp", "efficient": "enable_mem_efficient_sdp",
        "cudnn": "enable_cudnn_sdp", "math": "enable_math_sdp",
    }
    for backend, setter in setters.items():
        fn = getattr(torch.backends.cuda, setter, None)
        if fn is not None:
            fn(backend == name)


class Bench:
    def __init__(self, args):
        self.a = args
        self.dev = args.device
        self.cfg = CONFIGS[args.model]
        self.cuda = self.dev == "cuda"
        self.name = torch.cuda.get_device_name(0) if self.cuda else "cpu"
        gen = torch.Generator().manual_seed(1)
        image, ctx, vocab = self.cfg[0], self.cfg[5], self.cfg[6]
        self.images = torch.rand(args.batch_size, 3, image, image, generator=gen) * 3.9 - 1.8
        self.tokens = random_tokens(args.batch_size, ctx, vocab, args.caption_tokens, gen)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def build(self, mode):
        """A fresh model, its weights made on the device itself (far quicker than on the CPU)."""
        torch.manual_seed(0)
        on_device = torch.device(self.dev) if hasattr(torch.device, "__enter__") else contextlib.nullcontext()
        with on_device:
            model = CLIP(self.cfg)
        return model.to(self.dev).train(mode == "train")

    def fresh(self):
        """Frees the previous variant's tensors and restarts the peak-memory count."""
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_mem(self):
        return torch.cuda.max_memory_allocated() if self.cuda else None

    def emit(self, **kw):
        row = {"tool": "torch", "torch": torch.__version__, "device": self.name, "sdpa": self.a.sdpa, **kw}
        print(json.dumps(row), flush=True)

    def autocast(self, precision):
        if precision == "bf16":
            return torch.autocast(self.dev, dtype=torch.bfloat16)
        return torch.autocast(self.dev, enabled=False)

    def train(self, variant, precision="bf16", data="host", positions=None, compile_model=False):
        a = self.a
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.fresh()
        model = self.build("train")
        opt = optimizer(model, fused=self.cuda)
        run = torch.compile(model) if compile_model else model
        L = positions or a.caption_tokens
        images, tokens = self.images, self.tokens[:, :L].contiguous()
        if data == "device":
            images, tokens = images.to(self.dev), tokens.to(self.dev)
        times, first = [], None
        for i in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            x, t = images.to(self.dev), tokens.to(self.dev)
            with self.autocast(precision):
                loss = run(x, t)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            value = loss.item()  # waits for the whole step
            dt = time.perf_counter() - t0
            if i == 0:
                first = dt
            if i >= a.warmup:
                times.append(dt)
        times.sort()
        step = times[len(times) // 2]
        self.emit(kind="train", variant=variant, precision=precision, data=data, batch=a.batch_size,
                  caption_tokens=a.caption_tokens, text_positions=L, steps=a.steps, warmup=a.warmup,
                  step_ms=step * 1e3, samples_per_s=a.batch_size / step, peak_mem_bytes=self.peak_mem(),
                  compile_s=first if compile_model else None, loss=value, fused_adamw=self.cuda)
        del model, opt, run

    def infer(self, variant, precision):
        a = self.a
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.fresh()
        model = self.build("eval")
        gen = torch.Generator().manual_seed(2)
        image = self.cfg[0]
        x = (torch.rand(a.infer_batch, 3, image, image, generator=gen) * 3.9 - 1.8).to(self.dev)
        times = []
        with torch.no_grad():
            for i in range(a.warmup + a.steps):
                self.sync()
                t0 = time.perf_counter()
                with self.autocast(precision):
                    model.encode_image(x)
                self.sync()
                if i >= a.warmup:
                    times.append(time.perf_counter() - t0)
        times.sort()
        step = times[len(times) // 2]
        self.emit(kind="infer", variant=variant, precision=precision, batch=a.infer_batch, steps=a.steps,
                  warmup=a.warmup, step_ms=step * 1e3, samples_per_s=a.infer_batch / step,
                  peak_mem_bytes=self.peak_mem())
        del model, x


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="vit-b-32", choices=sorted(CONFIGS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--caption-tokens", type=int, default=20)
    ap.add_argument("--infer-batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--sdpa", default="efficient", choices=["efficient", "flash", "cudnn", "math", "default"])
    # the most wanted first: a timeout loses only the later ones
    ap.add_argument("--variants", default="eager,infer-bf16,eager-fp32,infer-fp32,compile,eager-77,eager-device")
    ap.add_argument("--budget-s", type=float, default=85.0, help="skip torch.compile unless this leaves 45 s for it")
    a = ap.parse_args()
    ctx = CONFIGS[a.model][5]
    if not 2 <= a.caption_tokens <= ctx:
        ap.error(f"--caption-tokens must be from 2 to {ctx}, got {a.caption_tokens}")
    if a.device == "cuda" and not torch.cuda.is_available():
        note("torch sees no CUDA device")
        return 1
    set_sdpa(a.sdpa)
    b = Bench(a)
    note(f"torch {torch.__version__} on {b.name}; batch {a.batch_size}, captions up to {a.caption_tokens} tokens, sdpa {a.sdpa}")
    runs = {
        "eager": lambda: b.train("eager"),
        "eager-device": lambda: b.train("eager-device", data="device"),
        "eager-77": lambda: b.train("eager-77", positions=ctx),
        "eager-fp32": lambda: b.train("eager-fp32", precision="fp32"),
        "infer-bf16": lambda: b.infer("infer-bf16", "bf16"),
        "infer-fp32": lambda: b.infer("infer-fp32", "fp32"),
        "compile": lambda: b.train("compile", compile_model=True),
    }
    variants = a.variants.split(",")
    unknown = [v for v in variants if v not in runs]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)} (known: {', '.join(runs)})")
    for v in variants:
        if v == "compile":
            left = a.budget_s - (time.perf_counter() - T_START)
            if not hasattr(torch, "compile"):
                note("compile skipped: this PyTorch has no torch.compile")
                continue
            if left < 45:
                note(f"compile skipped: {left:.0f} s of the budget left, compiling takes about a minute")
                continue
        try:
            runs[v]()
        except Exception as e:  # one failing variant (out of memory, a backend refusing) must not lose the others
            note(f"{v} failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
            if b.cuda:
                torch.cuda.empty_cache()
    note(f"done in {time.perf_counter() - T_START:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
