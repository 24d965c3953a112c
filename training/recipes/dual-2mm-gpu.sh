#!/usr/bin/env bash
# The issue-14 GPU arms: simulate as many stress scans as the budget allows on every core, then train the 2 mm
# recipe (`dual-2mm-gpu.yaml`) once per score head in ARMS, side by side on one GPU, and write slim checkpoints
# (no optimizer state) for export, calibration and scoring on a CPU machine.
#
#   bash training/recipes/dual-2mm-gpu.sh OUT_DIR
#
# Sized for one H200 with 16 cores in <= 8 minutes: SIM_BUDGET_S of simulation (chunks of CHUNK scans, one
# seed each from 9100 up, stopped before a chunk would overrun), TRAIN_BUDGET_S of training (the schedule's
# epochs, or fewer if the budget ends first: best.pt and last.pt are written every epoch). The same recipe
# runs on CPUs without this script: `parcelscan simulate` + `data split` + `parcelscan train --config
# training/recipes/dual-2mm-gpu.yaml --device cpu --workers 2` (hours instead of minutes).
#
# Environment: PY (python, default python3), WORK (scratch, default /tmp/gpuarm), SIM_BUDGET_S (160),
# CHUNK (1600), TRAIN_BUDGET_S (270), FIRST_SEED (9100: a development seed, never a bar seed),
# ARMS (score heads, default "heatmap_topk classifier": two arms measured at 153 s of training for 16 epochs on
# an H200; a third arm shares the 16 cores), WORKERS (loader workers per arm, default
# cores / arms).
set -uo pipefail
OUT=${1:?usage: dual-2mm-gpu.sh OUT_DIR}
PY=${PY:-python3}
WORK=${WORK:-/tmp/gpuarm}
SIM_BUDGET_S=${SIM_BUDGET_S:-160}
CHUNK=${CHUNK:-1600}
TRAIN_BUDGET_S=${TRAIN_BUDGET_S:-270}
FIRST_SEED=${FIRST_SEED:-9100}
RECIPE=${RECIPE:-training/recipes/dual-2mm-gpu.yaml}
ARMS=${ARMS:-heatmap_topk classifier}
CORES=$(nproc)
N_ARMS=$(echo $ARMS | wc -w)
WORKERS=${WORKERS:-$(( CORES / N_ARMS > 1 ? CORES / N_ARMS : 1 ))}
mkdir -p "$OUT" "$WORK"
LOG="$OUT/gpuarm.log"
t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$LOG"; }

say "machine: $CORES cores; $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo 'no GPU')"
say "python: $($PY -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())')"

# --- simulate: chunks of CHUNK scans, one seed each, until the next chunk would overrun the budget -----------
seed=$FIRST_SEED
chunk_s=0
while true; do
  elapsed=$(( $(date +%s) - t0 ))
  if (( seed > FIRST_SEED && elapsed + chunk_s > SIM_BUDGET_S )); then break; fi
  start=$(date +%s)
  $PY -m parcelscan simulate --out "$WORK/sim$seed" --count "$CHUNK" --seed "$seed" --mix stress \
    --workers "$CORES" --no-progress >> "$LOG" 2>&1 || { say "simulate seed $seed failed"; exit 1; }
  chunk_s=$(( $(date +%s) - start ))
  say "simulated $CHUNK scans, seed $seed, in $chunk_s s"
  seed=$(( seed + 1 ))
done
DATA="$WORK/train"
rm -rf "$DATA"; mkdir -p "$DATA"
for dir in "$WORK"/sim*; do
  find "$dir" -mindepth 1 -maxdepth 1 -type f -name 'sim*' -exec mv -t "$DATA" {} +
  cat "$dir/manifest.jsonl" >> "$DATA/manifest.jsonl"
done
say "merged $(grep -c . "$DATA/manifest.jsonl") scans (seeds $FIRST_SEED-$(( seed - 1 )))"
$PY -m parcelscan data split "$DATA" --val 0.1 --test 0 --seed 0 >> "$LOG" 2>&1 || { say "split failed"; exit 1; }

# --- train one arm per score head side by side: the same data, windows and schedule; only the head differs ----
mkdir -p "$WORK/logs"
for arm in $ARMS; do
  sed -e "s/^score_head: .*/score_head: $arm/" -e "s/^workers: .*/workers: $WORKERS/" "$RECIPE" > "$WORK/$arm.yaml"
  timeout --signal=INT --kill-after=20 "$TRAIN_BUDGET_S" \
    $PY -m parcelscan train --data "$DATA" --config "$WORK/$arm.yaml" --project "$WORK/runs" --name "$arm" \
      --no-progress > "$WORK/logs/train-$arm.log" 2>&1 &
done
wait
for arm in $ARMS; do say "$arm: $(grep '^epoch' "$WORK/logs/train-$arm.log" | tail -n 1)"; done

# --- slim checkpoints (weights, EMA, config, preprocessing, threshold; no optimizer) and the run files ------
for arm in $ARMS; do
  for which in best last; do
    $PY - "$WORK/runs/$arm/weights/$which.pt" "$OUT/$arm-$which.pt" <<'EOF' >> "$LOG" 2>&1 || say "no $arm $which.pt"
import sys, torch
data = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
data["optimizer"], data["scheduler"] = {}, {}
data.pop("train_state", None)
torch.save(data, sys.argv[2])
print("slim", sys.argv[2], "epoch", data["epoch"])
EOF
  done
done
tar -czf "$OUT/runs.tar.gz" --exclude='*.pt' -C "$WORK" runs logs 2>> "$LOG"
say "done"
