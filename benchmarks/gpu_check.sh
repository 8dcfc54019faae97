#!/usr/bin/env bash
# The project's GPU check: one short script for a lent GPU machine (about 6 minutes on one H100).
#
#   bash benchmarks/gpu_check.sh                     # writes gpu-check/ (or $OUT, when set)
#   SELFSUP_GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh   # the same stages, tiny, on the CPU
#
# Stages (each one's failure is recorded and the next still runs; the exit status is that of the worst):
#   1. the tests that need CUDA (pytest -m cuda: CrossRankBatchNorm's all-reduce path against
#      nn.SyncBatchNorm on a 1-process NCCL group, ...);
#   2. throughput (a) model-only vs (b) ours for simclr, byol, vicreg, moco-v3, swav at ResNet-18/32 px/
#      batch 512 and ResNet-50/224 px/batch 128 on synthetic images, with peak GPU memory;
#   3. a 2-epoch Fashion-MNIST SimCLR run (cpu preset) on the GPU, then its evaluation.
# Everything lands in $OUT: environment.json, cuda_tests.txt, throughput.json, simclr-fashion-mnist/,
# gpu_check.json (all results) and report.md (the tables). Needs selfsup installed (make install) and
# Fashion-MNIST (make data); the multi-GPU DDP checks run on CPUs in tests/distributed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
DRY=${SELFSUP_GPU_CHECK_DRY_RUN:-0}
mkdir -p "$OUT"
status=0
record() { local code=$1 stage=$2; echo "$stage: exit $code"; echo "{\"stage\": \"$stage\", \"exit\": $code}" >> "$OUT/stages.jsonl"; [ "$code" -gt "$status" ] && status=$code; }
: > "$OUT/stages.jsonl"

$PY -c "import json, selfsup.runtime as r; print(json.dumps(r.machine()))" > "$OUT/environment.json"
record $? environment

if [ "$DRY" = 1 ]; then
    THROUGHPUT=(--methods simclr --steps 1 --rounds 1 --warmup 0 --set batch_size=8 --set aug.image_size=32
                --set precision=fp32 --set channels_last=false)
    RUN=(--backbone resnet10 --batch-size 16 --max-steps 2 --set train_subset=64 --set aug.image_size=16
         --set knn_every=0 --set precision=fp32 --set channels_last=false)
else
    THROUGHPUT=(--methods simclr,byol,vicreg,moco-v3,swav --steps 5 --rounds 3 --warmup 3)
    RUN=(--epochs 2)
fi

$PY -m pytest -q -m cuda tests -p no:cacheprovider > "$OUT/cuda_tests.txt" 2>&1
code=$?; [ "$code" = 5 ] && code=0  # 5: nothing collected
record $code cuda_tests

$PY benchmarks/throughput.py --settings gpu-small,gpu-imagenet --skip-conventional --json "${THROUGHPUT[@]}" \
    > "$OUT/throughput.json" 2> "$OUT/throughput.log"
record $? throughput

rm -rf "$OUT/simclr-fashion-mnist"
$PY -m selfsup pretrain --method simclr --preset cpu --eval --no-progress --out "$OUT/simclr-fashion-mnist" \
    "${RUN[@]}" > "$OUT/simclr-fashion-mnist.log" 2>&1
record $? simclr_fashion_mnist

$PY benchmarks/gpu_report.py "$OUT"
record $? report
exit $status
