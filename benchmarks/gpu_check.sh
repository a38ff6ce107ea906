#!/usr/bin/env bash
# Where a CUDA GPU is lent: train on the monkeys, predict and explain on CUDA, print the times beside
# this repository's CPU figures (README: default train 64 s wall; predict 145-185 photos/s).
# Run from the repository root:  bash benchmarks/gpu_check.sh [DATA_DIR]
set -euo pipefail
DATA=${1:-../shared/data/monkeys}
OUT=${OUT:-$(mktemp -d)}
PY=${PY:-python}
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA GPU visible to torch"
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPU(s)")
PY
secs() { echo "$(( ($(date +%s%N) - $1) / 1000000 ))" | sed -E 's/([0-9]{3})$/.\1/; s/^\./0./'; }
photos=$(find "$DATA" -type f -name '*.jpg' | head -n 400)
printf '%s\n' $photos > "$OUT/photos.txt"
n=$(wc -l < "$OUT/photos.txt")

s=$(date +%s%N)
$PY -m monkeysee train --device cuda --data "$DATA" --out "$OUT/run" > "$OUT/train.log" 2>&1
train_s=$(secs "$s")
tail -n 3 "$OUT/train.log"

s=$(date +%s%N)
xargs -a "$OUT/photos.txt" $PY -m monkeysee predict "$OUT/run" --device cuda --csv "$OUT/pred.csv" 2> "$OUT/predict.log"
predict_s=$(secs "$s")

s=$(date +%s%N)
head -n 16 "$OUT/photos.txt" | xargs $PY -m monkeysee explain "$OUT/run" --device cuda --out "$OUT/cams" \
    > "$OUT/explain.log" 2>&1
explain_s=$(secs "$s")

ngpu=$($PY -c "import torch; print(torch.cuda.device_count())")
s=$(date +%s%N)
$PY -m torch.distributed.run --standalone --nproc-per-node "$ngpu" -m monkeysee train --device cuda \
    --data "$DATA" --out "$OUT/run-ddp" > "$OUT/train-ddp.log" 2>&1
ddp_s=$(secs "$s")

echo "GPU: train ${train_s}s (CPU here: 64 s); predict $n photos in ${predict_s}s incl. start-up" \
     "(CPU: 145-185 photos/s); explain 16 photos ${explain_s}s; torchrun x${ngpu} train ${ddp_s}s"
grep -h "best:" "$OUT/train.log" "$OUT/train-ddp.log" || true
echo "outputs in $OUT"
