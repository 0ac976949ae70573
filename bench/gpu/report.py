#!/usr/bin/env python3
"""Builds the tsclip-vs-PyTorch table of a device run from its logs (bench/gpu.sh calls it).

usage: report.py <out_dir>   reads lab.log, torch_peer.log, vitest.log, sanitizer.log, steps.log
                              there; writes results.md there and prints it. The JSON lines of
                              `tsclip bench` (lab.log) and torch_train.py (torch_peer.log) make
                              the training-step and inference tables.
Ratios are PyTorch time / tsclip time: above 1 means tsclip is faster. Both sides come from the
same device call; a number from another run or card is never mixed in.
"""
import json
import os
import re
import sys


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def read(path):
    """A log's text without terminal colour codes ("" when missing)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return ANSI.sub("", f.read())
    except OSError:
        return ""


def fields(line):
    out = {}
    for tok in line.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            out[k] = v
    return out


def parse_results(text):
    """RESULT <lab> <case> <version> k=v ... -> {(lab, case, version): dict}"""
    res = {}
    for line in text.splitlines():
        if not line.startswith("RESULT "):
            continue
        parts = line.split()
        if len(parts) < 4:
            continue
        res[(parts[1], parts[2], parts[3])] = fields(line)
    return res


def parse_peers(text):
    res = {}
    for line in text.splitlines():
        if line.startswith("PEER "):
            parts = line.split()
            res[(parts[1], parts[2])] = fields(line)
    return res


def json_lines(text, key, values):
    """The JSON objects of a log whose `key` is one of `values` (other lines are ignored)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if isinstance(d, dict) and d.get(key) in values:
            out.append(d)
    return out


def bench_section(ours, peers):
    """`tsclip bench train|infer` beside torch_train.py's variants: one table per kind."""
    lines = []
    titles = {"train": "Training step (forward, contrastive loss, backward, AdamW)", "infer": "Image encoder forward, no graph"}
    for kind in ["train", "infer"]:
        mine = [d for d in ours if d.get("command") == kind]
        theirs = [d for d in peers if d.get("kind") == kind]
        if not mine and not theirs:
            continue
        t = mine[-1] if mine else None
        batch = t["batchSize"] if t else (theirs[0].get("batch") if theirs else "?")
        what = f"{t['model'] if t else 'ViT-B/32'}, batch {batch}" + (f", captions up to {t['captionTokens']} tokens" if t and kind == "train" else "")
        lines += [f"## {titles[kind]}: {what}", ""]
        if not t:
            lines += ["tsclip did not finish (see lab.log)", ""]
        lines += ["| run | precision | data | text positions | samples/s | step ms | MFU | peak memory GiB | tsclip speed-up |",
                  "|---|---|---|---|---|---|---|---|---|"]
        gib = lambda b: f"{b / 2**30:.2f}" if isinstance(b, (int, float)) else "-"
        if t:
            mfu = f"{t['mfu'] * 100:.1f}%" if t.get("mfu") is not None else "-"
            lines.append(f"| tsclip | {t['precision']} | {'host, copied each step' if kind == 'train' else 'on the device'} | "
                         f"{t['captionTokens'] if kind == 'train' else '-'} | {t['samplesPerSec']:.0f} | {t['stepMs']:.1f} | {mfu} | "
                         f"{gib(t['peakMemoryBytes'])} | - |")
        for d in theirs:
            mfu, ratio = "-", "-"
            if t and d.get("batch") == t["batchSize"] and (kind == "infer" or d.get("caption_tokens") == t["captionTokens"]):
                # the FLOPs the step needs (tsclip's count: 77-position runs do extra work that is not counted)
                peaks = t.get("cardPeakTflops") or {}
                peak = peaks.get("bf16" if d.get("precision") == "bf16" else "tf32")
                if peak:
                    mfu = f"{t['flopsPerStep'] / (d['step_ms'] / 1e3) / (peak * 1e12) * 100:.1f}%"
            if t and d.get("batch") == t["batchSize"] and d.get("samples_per_s"):
                ratio = f"{t['samplesPerSec'] / d['samples_per_s']:.2f}x"
            name = f"PyTorch {d.get('variant', '?')}" + (f" (compile {d['compile_s']:.0f} s)" if d.get("compile_s") else "")
            data = {"host": "host, copied each step"}.get(d.get("data"), "on the device")
            lines.append(f"| {name} | {d.get('precision', '?')} | {data} | {d.get('text_positions', '-')} | "
                         f"{d.get('samples_per_s', 0):.0f} | {d.get('step_ms', 0):.1f} | {mfu} | {gib(d.get('peak_mem_bytes'))} | {ratio} |")
        if t:
            lines.append("")
            lines.append(f"MFU: the FLOPs the step needs ({t['flopsPerStep'] / 1e9:.1f} GFLOP, lib/train/flops.ts) per second over "
                         f"the peak of the row's precision; tsclip's: {t['peakSource']}. Speed-up: tsclip samples/s over the row's.")
            ref = next((d for d in theirs if d.get("variant") == ("eager" if kind == "train" else "infer-bf16")), None)
            if ref and ref.get("peak_mem_bytes"):
                verdict = "no more than" if t["peakMemoryBytes"] <= ref["peak_mem_bytes"] else "MORE than"
                lines.append(f"Peak memory: tsclip {gib(t['peakMemoryBytes'])} GiB, {verdict} PyTorch {ref['variant']} "
                             f"({gib(ref['peak_mem_bytes'])} GiB).")
        notes = sorted({f"PyTorch {d['torch']}, SDPA backend {d.get('sdpa')}" for d in theirs if d.get("torch")})
        if notes:
            lines.append("; ".join(notes) + ".")
        lines.append("")
    return lines


def num(d, k, default=0.0):
    try:
        return float(d.get(k, default))
    except (TypeError, ValueError):
        return default


def ordered_cases(labs, lab):
    """The cases of one lab in the order the lab printed them."""
    out = []
    for (name, case, _version) in labs:
        if name == lab and case != "summary" and case not in out:
            out.append(case)
    return out


def fmt_ratio(peer_ms, ours_ms):
    if peer_ms <= 0 or ours_ms <= 0:
        return "-"
    return f"{peer_ms / ours_ms:.2f}x"


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    labs = parse_results(read(os.path.join(out, "lab.log")))
    peers = parse_peers(read(os.path.join(out, "torch_peer.log")))
    device = ""
    m = re.search(r"^== \S+ on (.+)$", read(os.path.join(out, "lab.log")), re.M)
    if m:
        device = m.group(1)
    lines = [f"# tsclip vs PyTorch, one device call ({device or 'device unknown'})", ""]
    lines += ["Ratios: PyTorch time / tsclip time (above 1: tsclip faster). INVALID: the timed result failed validation.", ""]

    # --- correctness ---
    lines += ["## Correctness", "", "| check | result |", "|---|---|"]
    for lab in ["gemm", "attention_forward", "attention_backward", "clip_loss", "conv"]:
        r = labs.get((lab, "summary", "all"))
        lines.append(f"| lab {lab} | {'pass' if r and r.get('ok') == '1' else ('FAIL' if r else 'did not finish')} |")
    vt = read(os.path.join(out, "vitest.log"))
    m = re.findall(r"Tests\s+(.*)", vt)
    vsum = m[-1].strip().replace("|", ",") if m else "no summary (see vitest.log)"
    lines.append(f"| vitest (TSCLIP_TEST_DEVICE=cuda) | {vsum} |")
    # gpu.sh ends each sanitizer run with: SANITIZER <tool>-<program> rc=<rc> <its summary line>
    for line in read(os.path.join(out, "sanitizer.log")).splitlines():
        if line.startswith("SANITIZER "):
            parts = line.split(" ", 3)
            rest = parts[3].replace("|", ",") if len(parts) > 3 else ""
            lines.append(f"| compute-sanitizer {parts[1]} | {parts[2]} {rest} |")
    steps = read(os.path.join(out, "steps.log")).strip()
    lines += ["", "Steps (exit code, seconds): " + "; ".join(steps.splitlines()), ""]

    # --- gemm ---
    versions = ["simple", "mma", "wgmma128", "wgmma256"]
    cases = ordered_cases(labs, "gemm")
    if cases:
        lines += ["## GEMM (bf16 in, f32 accumulation; TFLOP/s per version)", ""]
        lines += ["| case | " + " | ".join(versions) + " | tsclip best ms | PyTorch ms (TFLOP/s) | ratio |",
                  "|---" * (len(versions) + 4) + "|"]
        for c in cases:
            row, best = [], None
            for v in versions:
                r = labs.get(("gemm", c, v))
                if not r:
                    row.append("-")
                    continue
                ok = r.get("ok") == "1"
                row.append(f"{num(r, 'tflops'):.0f}" + ("" if ok else " INVALID"))
                if ok and (best is None or num(r, "ms") < best[0]):
                    best = (num(r, "ms"), v)
            p = peers.get(("gemm", c))
            best_s = f"{best[0]:.3f} ({best[1]})" if best else "-"
            peer_s = f"{num(p, 'ms'):.3f} ({num(p, 'tflops'):.0f})" if p else "-"
            ratio = fmt_ratio(num(p, "ms"), best[0]) if best and p else "-"
            lines.append(f"| {c} | " + " | ".join(row) + f" | {best_s} | {peer_s} | {ratio} |")
        lines.append("")

    # --- conv (implicit GEMM; no PyTorch row: the RN50 training step is its end-to-end comparison) ---
    cs = ordered_cases(labs, "conv")
    if cs:
        vs = sorted({k[2] for k in labs if k[0] == "conv" and k[1] in cs})
        lines += ["## conv2d (RN50 shapes, batch 64; ms, TFLOP/s)", ""]
        lines += ["| case | " + " | ".join(vs) + " |", "|---" * (len(vs) + 1) + "|"]
        for c in cs:
            row = []
            for v in vs:
                r = labs.get(("conv", c, v))
                row.append("-" if not r else f"{num(r, 'ms'):.3f} ({num(r, 'tflops'):.0f})" + ("" if r.get("ok") == "1" else " INVALID"))
            lines.append(f"| {c} | " + " | ".join(row) + " |")
        lines.append("")

    # --- attention ---
    for group, title in [("attention_forward", "Attention forward"), ("attention_fwdbwd", "Attention forward + backward")]:
        cs = ordered_cases(labs, group)
        if not cs:
            continue
        lines += [f"## {title} (bf16, q/k/v from the packed projection)", ""]
        lines += ["| shape | tsclip simple ms | tsclip mma ms | GB/s | PyTorch best ms (backend) | ratio |", "|---|---|---|---|---|---|"]
        for c in cs:
            s = labs.get((group, c, "simple"))
            mm = labs.get((group, c, "mma"))
            p = peers.get((group, c))
            sm = f"{num(s, 'ms'):.4f}" if s else "-"
            mms = (f"{num(mm, 'ms'):.4f}" + ("" if mm.get("ok") == "1" else " INVALID")) if mm else "-"
            ps = f"{num(p, 'ms'):.4f} ({p.get('note', '')})" if p else "-"
            lines.append(f"| {c} | {sm} | {mms} | {num(mm, 'gbs'):.0f} | {ps} | {fmt_ratio(num(p, 'ms'), num(mm, 'ms')) if p and mm else '-'} |")
        lines.append("")

    # --- clip loss ---
    cs = ordered_cases(labs, "clip_loss")
    if cs:
        lines += ["## Contrastive loss, D=512, forward + backward", ""]
        lines += ["| N | tsclip fwd ms | tsclip bwd ms | tsclip fwd+bwd ms | tsclip extra MiB | PyTorch naive ms | PyTorch extra GiB | ratio |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in cs:
            f = labs.get(("clip_loss", c, "mma-fwd"))
            b = labs.get(("clip_loss", c, "mma-bwd"))
            fb = labs.get(("clip_loss", c, "mma-fwdbwd"))
            mem = labs.get(("clip_loss", c, "memory"))
            p = peers.get(("clip_loss", c))
            bad = "" if not fb or fb.get("ok") == "1" else " INVALID"
            peer_ms = f"{num(p, 'ms'):.2f}" if p else "-"
            peer_mem = p.get("mem_gib", "-") if p else "-"
            ratio = fmt_ratio(num(p, "ms"), num(fb, "ms")) if p and fb else "-"
            lines.append(f"| {c} | {num(f, 'ms'):.2f} | {num(b, 'ms'):.2f} | {num(fb, 'ms'):.2f}{bad} | "
                         f"{num(mem, 'extra_mib'):.3f} | {peer_ms} | {peer_mem} | {ratio} |")
        lines.append("")

    # --- tsclip bench train/infer beside torch_train.py (JSON lines in lab.log and torch_peer.log) ---
    lines += bench_section(json_lines(read(os.path.join(out, "lab.log")), "command", ("train", "infer")),
                           json_lines(read(os.path.join(out, "torch_peer.log")), "tool", ("torch",)))

    # --- the memory-bound lab programs (their own output format: GB/s lines) ---
    mine = {"gemm", "gemm-quick", "attention_forward", "attention_backward", "clip_loss"}
    block, other = None, []
    for line in read(os.path.join(out, "lab.log")).splitlines():
        m = re.match(r"^== lab-(\S+)", line)
        if m:
            block = m.group(1) if m.group(1) not in mine else None
            if block:
                other.append(f"{block}:")
            continue
        if block and re.search(r"GB/s|FAIL|N = ", line):
            other.append("    " + line.strip())
    if other:
        lines += ["## Memory-bound lab programs (native/cuda/dev Makefile), raw", "", "```"] + other[:80] + ["```", ""]

    # --- bandwidth peers ---
    bw = [(c, d) for (g, c), d in peers.items() if g == "bandwidth"]
    if bw:
        lines += ["## PyTorch bandwidth peers (for the elementwise ops)", "", "| op | ms | GB/s |", "|---|---|---|"]
        for c, d in bw:
            lines.append(f"| {c} | {num(d, 'ms'):.4f} | {num(d, 'gbs'):.0f} |")
        lines.append("")

    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
