#!/usr/bin/env bash
# The whole chain on the shared CLUE sample with the configs in examples/configs/.
# Run from the repository root: bash examples/pipeline.sh   (outputs go to work/)
set -euo pipefail
C=examples/configs
albertzh clean --config $C/clean.yaml --overwrite
albertzh segment --config $C/segment.yaml --overwrite
albertzh build-vocab --config $C/build-vocab.yaml --overwrite
albertzh make-shards --config $C/make-shards.yaml --overwrite
albertzh pretrain --config $C/pretrain-tiny.yaml --overwrite
albertzh finetune --config $C/finetune-chnsenticorp.yaml --overwrite
albertzh eval --task chnsenticorp --model work/runs/tiny-senti \
  --data-dir ../shared/data/tasks/chnsenticorp --split dev
