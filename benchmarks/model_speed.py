"""Tokens/s of a full ALBERT pretraining step: albertzh vs HF ``AlbertForPreTraining``.

One step = forward (MLM + SOP), loss, backward, AdamW step, on the same weights and batches.
albertzh computes MLM logits only at the masked positions (as its pretrain stage does); HF runs
as its users run it (``attn_implementation="sdpa"``, full-sequence logits, labels -100 elsewhere).
The two are timed in alternating rounds in the same process, because the CPU is shared and
timings drift; the ratio of the medians is printed.

How close to the hardware: once per run the machine's matmul peak is measured (one large square
GEMM in the step's dtype, n = 2048 on CPU / 8192 on CUDA, median of 5, after a warm-up; skip
with --no-peak), and for each size the model FLOPs of a step (:func:`train_flops_per_step`)
over the median step time give ``albertzh_gflops`` and ``share_of_peak`` (and
``hf_share_of_peak``: the same model FLOPs over HF's step time), on CPU and GPU alike. On a
GPU the spec-sheet MFU (``mfu``, from --peak-tflops or the PEAK_TFLOPS table, bf16) is
printed as well.

    python benchmarks/model_speed.py                       # tiny and base, CPU fp32, 16 x 128
    python benchmarks/model_speed.py --sizes tiny --rounds 5
    python benchmarks/model_speed.py --sizes tiny --json   # one JSON object per size
    python benchmarks/model_speed.py --device cuda --dtype bf16 --seq 512 --sizes base
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from albertzh.model import AlbertConfig, AlbertForPreTraining

# Dense bf16 peak TFLOP/s for the MFU figure (override with --peak-tflops).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def make_batches(cfg: AlbertConfig, n: int, batch: int, seq: int, masked: int, seed: int = 0):
    """Pretraining-like batches: ~10% shorter sequences (padding), `masked` positions each."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, cfg.vocab_size, (batch, seq), generator=g)
        lengths = torch.full((batch,), seq)
        short = torch.rand(batch, generator=g) < 0.1
        lengths[short] = torch.randint(masked + 2, seq, (int(short.sum()),), generator=g)
        attention_mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
        ids = ids * attention_mask  # pad id 0
        token_type_ids = (torch.arange(seq)[None, :] >= (lengths // 2)[:, None]).long()
        token_type_ids = token_type_ids * attention_mask
        positions = torch.stack(
            [torch.randperm(int(n_) - 2, generator=g)[:masked].sort().values + 1 for n_ in lengths]
        )
        masked_ids = torch.gather(ids, 1, positions)
        labels = torch.full_like(ids, -100).scatter_(1, positions, masked_ids)
        sop = torch.randint(0, 2, (batch,), generator=g)
        out.append(
            dict(
                input_ids=ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                positions=positions,
                masked_ids=masked_ids,
                labels=labels,
                sop=sop,
            )
        )
    return out


def ours_step(model, opt, b, autocast):
    with autocast():
        out = model(
            input_ids=b["input_ids"],
            attention_mask=b["attention_mask"],
            token_type_ids=b["token_type_ids"],
            masked_positions=b["positions"],
        )
        loss = F.cross_entropy(out.mlm_logits.flatten(0, 1).float(), b["masked_ids"].flatten())
        loss = loss + F.cross_entropy(out.sop_logits.float(), b["sop"])
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def hf_step(model, opt, b, autocast):
    with autocast():
        out = model(
            input_ids=b["input_ids"],
            attention_mask=b["attention_mask"],
            token_type_ids=b["token_type_ids"],
            labels=b["labels"],
            sentence_order_label=b["sop"],
        )
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return out.loss


def measure_matmul_peak(
    device: torch.device | str,
    dtype: torch.dtype | str = torch.float32,
    n: int | None = None,
    repeats: int = 5,
) -> float:
    """FLOP/s of one ``n x n @ n x n`` GEMM (2 n^3 / t): a warm-up, then the median of ``repeats``.

    ``n`` defaults to 2048 on CPU and 8192 on CUDA; ``dtype`` is a torch dtype or "fp32"/"bf16".
    """
    device = torch.device(device)
    if isinstance(dtype, str):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    if n is None:
        n = 8192 if device.type == "cuda" else 2048
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.mm(a, b)  # warm-up (kernel selection, allocator)
    sync()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync()
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times)


def train_flops_per_step(cfg: AlbertConfig, batch: int, seq: int, masked: int) -> float:
    """Matmul FLOPs of one training step (3x forward), counting shared layers per use.

    Per token: the embedding projection E->H, and per layer Q/K/V/O (4 H^2) and the FFN
    (2 H F); per sequence and layer the attention scores and context (2 T^2 H); the MLM head
    (H->E dense, E->V decoder; brightmart layout: H->H dense, H->E projection, E->V) at the
    ``masked`` positions only. x2 for multiply-add, x3 for forward + backward. The SOP head,
    the pooler and the non-matmul ops are left out. These are *model* FLOPs, the same for HF;
    albertzh executes somewhat fewer (its last layer runs Q, O and the FFN only at the masked
    rows), so its share of peak is the useful work per second, not the executed.
    """
    H, E, V, F_ = cfg.hidden_size, cfg.embedding_size, cfg.vocab_size, cfg.intermediate_size
    tokens = batch * seq
    per_layer = 2 * (4 * H * H + 2 * H * F_) * tokens + 2 * 2 * batch * seq * seq * H
    fwd = 2 * E * H * tokens + cfg.num_hidden_layers * per_layer
    head = H * E + E * V  # MLM head at masked positions only
    if getattr(cfg, "embedding_layout", "google") == "brightmart":
        head = H * H + H * E + E * V
    fwd += 2 * head * batch * masked
    return 3.0 * fwd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="tiny,base", help="comma-separated presets")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument(
        "--masked", type=int, default=20, help="masked positions per sequence (~15%% if >= seq-2)"
    )
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (median is kept)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--compile", action="store_true", help="torch.compile the albertzh model")
    ap.add_argument("--no-hf", action="store_true", help="time albertzh only")
    ap.add_argument("--peak-tflops", type=float, default=None, help="for MFU (GPU)")
    ap.add_argument("--no-peak", action="store_true", help="skip measuring the matmul peak")
    ap.add_argument(
        "--peak-n", type=int, default=None, help="GEMM size for the peak (2048 CPU, 8192 CUDA)"
    )
    ap.add_argument("--peak-repeats", type=int, default=5, help="timed GEMMs (median is kept)")
    ap.add_argument("--json", action="store_true", help="print one JSON object per size")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    bf16 = args.dtype == "bf16"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    peak = args.peak_tflops
    if peak is None and device.type == "cuda" and bf16:
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)

    if args.masked + 2 >= args.seq:  # no room for them (and for shorter sequences): ~15%
        args.masked = max(1, int(0.15 * args.seq))
    print(
        f"# torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, "
        f"{args.dtype}, batch {args.batch} x seq {args.seq}, {args.masked} masked/seq"
    )
    measured_peak = None  # FLOP/s
    if not args.no_peak:
        peak_n = args.peak_n or (8192 if device.type == "cuda" else 2048)
        measured_peak = measure_matmul_peak(device, args.dtype, peak_n, args.peak_repeats)
        print(
            f"# {args.dtype} matmul peak {measured_peak / 1e9:.0f} GFLOP/s "
            f"({peak_n}\u00b3 GEMM, median of {args.peak_repeats})"
        )
    for size in args.sizes.split(","):
        cfg = AlbertConfig.preset(
            size, vocab_size=21128, max_position_embeddings=max(512, args.seq)
        )
        torch.manual_seed(0)
        ours = AlbertForPreTraining(cfg).to(device).train()
        runners = {"albertzh": ours}
        if not args.no_hf:
            import transformers

            hf_cfg = transformers.AlbertConfig(**cfg.to_hf_dict(), attn_implementation="sdpa")
            hf = transformers.AlbertForPreTraining(hf_cfg)
            assert hf.config._attn_implementation == "sdpa", hf.config._attn_implementation
            hf.load_state_dict(ours.state_dict(), strict=False)  # same weights
            runners["hf"] = hf.to(device).train()
        model_fns = {"albertzh": ours_step, "hf": hf_step}
        opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in runners.items()}
        fwd_models = dict(runners)
        if args.compile:
            fwd_models["albertzh"] = torch.compile(ours)
        batches = make_batches(cfg, 4, args.batch, args.seq, args.masked)
        batches = [{k: v.to(device) for k, v in b.items()} for b in batches]

        for name in runners:  # warm-up (allocator, kernels, compile)
            for i in range(args.warmup):
                model_fns[name](fwd_models[name], opts[name], batches[i % 4], autocast)
        sync()
        times: dict[str, list[float]] = {k: [] for k in runners}
        for r in range(args.rounds):
            order = list(runners) if r % 2 == 0 else list(reversed(runners))
            for name in order:
                sync()
                t0 = time.perf_counter()
                for i in range(args.steps):
                    model_fns[name](fwd_models[name], opts[name], batches[i % 4], autocast)
                sync()
                times[name].append((time.perf_counter() - t0) / args.steps)
        tokens = args.batch * args.seq
        result = {"size": size, "params": sum(p.numel() for p in ours.parameters())}
        for name, ts in times.items():
            med = statistics.median(ts)
            result[f"{name}_tok_s"] = round(tokens / med, 1)
            result[f"{name}_rounds_tok_s"] = [round(tokens / t, 1) for t in ts]
        if "hf" in times:
            result["ratio"] = round(result["albertzh_tok_s"] / result["hf_tok_s"], 3)
            # Rounds run back to back, so each round's ratio sees about the same machine load.
            paired = [h / o for o, h in zip(times["albertzh"], times["hf"], strict=True)]
            result["paired_ratio"] = round(statistics.median(paired), 3)
        flops = train_flops_per_step(cfg, args.batch, args.seq, args.masked)
        step = statistics.median(times["albertzh"])
        result["albertzh_gflops"] = round(flops / step / 1e9, 2)
        if measured_peak:
            result["matmul_peak_gflops"] = round(measured_peak / 1e9, 1)
            result["share_of_peak"] = round(flops / step / measured_peak, 4)
            if "hf" in times:
                hf_step_t = statistics.median(times["hf"])
                result["hf_gflops"] = round(flops / hf_step_t / 1e9, 2)
                result["hf_share_of_peak"] = round(flops / hf_step_t / measured_peak, 4)
        if peak:
            result["albertzh_tflops"] = round(flops / step / 1e12, 2)
            result["mfu"] = round(flops / step / (peak * 1e12), 4)
        if args.json:
            print(json.dumps(result))
        else:
            line = f"{size:8s} params {result['params']:>11,}  albertzh {result['albertzh_tok_s']:>9.1f} tok/s"
            if "hf" in times:
                line += f"  hf {result['hf_tok_s']:>9.1f} tok/s  ratio {result['ratio']:.2f}x"
                line += f" (median per-round ratio {result['paired_ratio']:.2f}x)"
            line += f"  {result['albertzh_gflops']:.1f} GFLOP/s"
            if "share_of_peak" in result:
                line += f" = {result['share_of_peak']:.1%} of matmul peak"
            if "hf_share_of_peak" in result:
                line += f" (hf {result['hf_share_of_peak']:.1%})"
            if "mfu" in result:
                line += f"  {result['albertzh_tflops']} TFLOP/s  MFU {result['mfu']:.1%}"
            print(line)
            print(f"         rounds tok/s: { {k: result[f'{k}_rounds_tok_s'] for k in times} }")


if __name__ == "__main__":
    main()
