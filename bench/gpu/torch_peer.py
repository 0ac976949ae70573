#!/usr/bin/env python3
"""PyTorch peers for tsclip's kernel lab, measured in the same device call (bench/gpu.sh runs it).

Prints one line per measurement, which bench/gpu/report.py reads:
  PEER <group> <case> ms=<median> tflops=<..> gbs=<..> mem_gib=<..> note=<..>
Groups and cases mirror the lab's labels (native/cuda/dev/*.cu) so the report can pair them:
  gemm               bf16 F.linear (x @ W^T) at CLIP's shapes and 8192^3
  attention_forward  SDPA forward, q/k/v views of a packed [B,S,3,H,Dh] projection, fastest backend
  attention_fwdbwd   SDPA forward + backward, fastest backend
  clip_loss          the naive loss (logits matrix + two cross-entropies) fwd+bwd, bf16 autocast
  bandwidth          layer norm, softmax, fused AdamW (GB/s against the bytes they must move)
Timing: CUDA events around each call, warm-up first, L2 flushed before every repetition, median.
"""
import argparse
import contextlib
import math
import sys

import torch
import torch.nn.functional as F

DEV = "cuda"


def flush_buffer():
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    return torch.empty(max(l2, 1 << 20) * 2 // 4, dtype=torch.float32, device=DEV)


FLUSH = None


def median_ms(fn, reps=20, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        FLUSH.zero_()
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def emit(group, case, ms, flops=0.0, nbytes=0.0, mem_gib=None, note=""):
    tf = flops / (ms * 1e-3) / 1e12 if ms > 0 else 0.0
    gbs = nbytes / (ms * 1e-3) / 1e9 if ms > 0 else 0.0
    mem = f" mem_gib={mem_gib:.3f}" if mem_gib is not None else ""
    print(f"PEER {group} {case} ms={ms:.5f} tflops={tf:.2f} gbs={gbs:.1f}{mem} note={note or '-'}", flush=True)


def gemm_peers():
    shapes = [
        ("vitb32-qkv-12800x2304x768", 12800, 2304, 768),
        ("vitb32-out-12800x768x768", 12800, 768, 768),
        ("vitb32-fc-12800x3072x768", 12800, 3072, 768),
        ("vitb32-proj-12800x768x3072", 12800, 768, 3072),
        ("text-qkv-19712x1536x512", 19712, 1536, 512),
        ("text-fc-19712x2048x512", 19712, 2048, 512),
        ("text-proj-19712x512x2048", 19712, 512, 2048),
        ("square-8192", 8192, 8192, 8192),
    ]
    for label, M, N, K in shapes:
        x = torch.randn(M, K, device=DEV, dtype=torch.bfloat16)
        w = torch.randn(N, K, device=DEV, dtype=torch.bfloat16)
        ms = median_ms(lambda: F.linear(x, w), reps=10 if M * N * K > 2e11 else 20)
        emit("gemm", label, ms, 2.0 * M * N * K, 2.0 * (M * K + N * K + M * N))
    # the backward's layouts: dX = dY W, dW = dY^T X
    dy = torch.randn(12800, 3072, device=DEV, dtype=torch.bfloat16)
    w = torch.randn(3072, 768, device=DEV, dtype=torch.bfloat16)
    emit("gemm", "bwd-dx-12800x768x3072", median_ms(lambda: dy @ w), 2.0 * 12800 * 768 * 3072)
    dy2 = torch.randn(12800, 3072, device=DEV, dtype=torch.bfloat16)
    x2 = torch.randn(12800, 768, device=DEV, dtype=torch.bfloat16)
    emit("gemm", "bwd-dw-3072x768x12800", median_ms(lambda: dy2.t() @ x2), 2.0 * 12800 * 768 * 3072)
    # f32 operands: float32-exact (tsclip's 3xTF32) and tf32-allowed
    a32 = torch.randn(12800, 768, device=DEV)
    w32 = torch.randn(768, 768, device=DEV)
    torch.backends.cuda.matmul.allow_tf32 = False
    emit("gemm", "f32-3xtf32-12800x768x768", median_ms(lambda: F.linear(a32, w32)), 2.0 * 12800 * 768 * 768,
         note="fp32")
    torch.backends.cuda.matmul.allow_tf32 = True
    emit("gemm", "f32-tf32-12800x768x768", median_ms(lambda: F.linear(a32, w32)), 2.0 * 12800 * 768 * 768,
         note="tf32")
    torch.backends.cuda.matmul.allow_tf32 = False


def sdpa_backends():
    from torch.nn.attention import SDPBackend

    return [
        ("flash", SDPBackend.FLASH_ATTENTION),
        ("efficient", SDPBackend.EFFICIENT_ATTENTION),
        ("cudnn", SDPBackend.CUDNN_ATTENTION),
    ]


def attention_peers():
    from torch.nn.attention import sdpa_kernel

    shapes = [
        ("vitb32-256x12x50x64", 256, 12, 50, 64, False),
        ("text-256x8x77x64-causal", 256, 8, 77, 64, True),
        ("vitb16-128x12x197x64", 128, 12, 197, 64, False),
        ("vitl14-64x16x257x64", 64, 16, 257, 64, False),
        ("vith14-64x16x257x80", 64, 16, 257, 80, False),
    ]
    for label, B, H, S, D, causal in shapes:
        pairs = 0.5 * S * (S + 1) if causal else S * S
        fl = 4.0 * B * H * pairs * D
        act = B * S * H * D * 2
        packed = torch.randn(B, S, 3, H, D, device=DEV, dtype=torch.bfloat16, requires_grad=True)
        grad = torch.randn(B, H, S, D, device=DEV, dtype=torch.bfloat16)

        def views():
            q, k, v = packed.unbind(2)
            return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

        best_f, best_fb = None, None
        for name, backend in sdpa_backends() + [("default", None)]:
            try:
                ctx = sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext()

                def fwd():
                    with torch.no_grad():
                        q, k, v = views()
                        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

                def fwdbwd():
                    q, k, v = views()
                    o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    o.backward(grad)
                    packed.grad = None

                with ctx:
                    mf = median_ms(fwd)
                    mfb = median_ms(fwdbwd)
            except Exception as e:  # a backend that does not take this shape
                print(f"# sdpa {label} {name}: unavailable ({type(e).__name__}: {str(e).splitlines()[0][:80]})")
                continue
            print(f"# sdpa {label} {name}: fwd {mf:.4f} ms, fwd+bwd {mfb:.4f} ms")
            if best_f is None or mf < best_f[0]:
                best_f = (mf, name)
            if best_fb is None or mfb < best_fb[0]:
                best_fb = (mfb, name)
        if best_f:
            emit("attention_forward", label, best_f[0], fl, 4 * act, note=best_f[1])
            emit("attention_fwdbwd", label, best_fb[0], 3.5 * fl, 12 * act, note=best_fb[1])


def clip_loss_peers(sizes):
    for N in sizes:
        D = 512
        img = F.normalize(torch.randn(N, D, device=DEV), dim=-1).requires_grad_()
        txt = F.normalize(torch.randn(N, D, device=DEV), dim=-1).requires_grad_()
        scale = torch.tensor(math.log(100.0), device=DEV, requires_grad=True)
        labels = torch.arange(N, device=DEV)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = scale.exp() * img @ txt.t()
                loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
            loss.backward()
            img.grad = txt.grad = scale.grad = None

        try:
            step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step()
            torch.cuda.synchronize()
            extra = (torch.cuda.max_memory_allocated() - base) / 2**30
            ms = median_ms(step, reps=5 if N > 10000 else 10, warmup=1)
        except torch.cuda.OutOfMemoryError:
            print(f"# clip_loss N{N}: out of memory")
            continue
        emit("clip_loss", f"N{N}-D512", ms, 6.0 * N * N * D, 0.0, mem_gib=extra, note="naive-autocast")
        del img, txt
        torch.cuda.empty_cache()


def bandwidth_peers():
    x = torch.randn(12800, 768, device=DEV)
    w = torch.ones(768, device=DEV)
    b = torch.zeros(768, device=DEV)
    emit("bandwidth", "layernorm-f32-12800x768", median_ms(lambda: F.layer_norm(x, (768,), w, b)), 0, 2 * x.numel() * 4)
    xb = x.to(torch.bfloat16)
    emit("bandwidth", "layernorm-bf16-12800x768",
         median_ms(lambda: F.layer_norm(xb, (768,), w.bfloat16(), b.bfloat16())), 0, 2 * xb.numel() * 2)
    s = torch.randn(3072, 50, 50, device=DEV)
    emit("bandwidth", "softmax-f32-3072x50x50", median_ms(lambda: torch.softmax(s, -1)), 0, 2 * s.numel() * 4)
    s2 = torch.randn(8192, 8192, device=DEV)
    emit("bandwidth", "softmax-f32-8192x8192", median_ms(lambda: torch.softmax(s2, -1)), 0, 2 * s2.numel() * 4)
    n = 151_000_000  # CLIP ViT-B/32's parameters, one flat tensor
    p = torch.zeros(n, device=DEV, requires_grad=True)
    p.grad = torch.randn(n, device=DEV)
    opt = torch.optim.AdamW([p], lr=1e-4, fused=True)
    opt.step()
    emit("bandwidth", "adamw-fused-151M", median_ms(opt.step, reps=10), 0, 7.0 * n * 4)


def main():
    global FLUSH
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="gemm,attention,clip,bandwidth")
    ap.add_argument("--clip-sizes", default="8192,32768")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("# torch sees no CUDA device")
        return 1
    FLUSH = flush_buffer()
    props = torch.cuda.get_device_properties(0)
    print(f"# torch {torch.__version__} on {props.name}, {props.multi_processor_count} SMs")
    torch.backends.cuda.matmul.allow_tf32 = False
    groups = args.only.split(",")
    if "gemm" in groups:
        gemm_peers()
    if "attention" in groups:
        attention_peers()
    if "clip" in groups:
        clip_loss_peers([int(v) for v in args.clip_sizes.split(",")])
    if "bandwidth" in groups:
        bandwidth_peers()
    return 0


if __name__ == "__main__":
    sys.exit(main())
