#!/bin/bash
# One device call that weighs settings against the default on one card: parity, the default and
# each variant in turn (REPEAT rounds, alternating, so drift between runs shows), the default's
# per-op profile, then torch.compile; tokens/s and ratios at the end. At most seven files in $OUT
# (a call brings back at most 8). Copy this into .devbin/ with the parity and bench examples and
# torch_llama.py (and torch_profile.py); run it from the repository root, e.g.
#   CONFIGS=ds-1b,ds-1b-gqa REPEAT=2 VARIANTS="sms8:DSLLM_OPTIMIZER_SMS=8 cand32:DSLLM_GEMM_CANDIDATES=32" bash .devbin/device-levers.sh
# A variant is `name:VAR=value[,VAR=value...]`. PROFILE= (empty) skips the profile, TORCH= the baseline.
# TORCH_FIRST=1 runs the baseline right after the first default run (a call cut short still
# has the ratios). BUDGET_S (default 570, under the call's 600 s limit): a step whose estimated
# time (seconds a config: BENCH_S 35, TORCH_S 75) would end past it is skipped and named.
cd "$(dirname "$0")/.."
CONFIGS=${CONFIGS:-ds-160m,ds-1b,ds-1b-gqa}
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader | tee $OUT/times.txt
# DSLLM_STREAM_WAITS: after its timed steps each bench run times, in two more, how long the
# forward waited for AdamW (reported beside the run).
export PYTHONUNBUFFERED=1 DSLLM_KERNEL_CACHE=/tmp/dsllm-kernels DSLLM_STREAM_WAITS=1
# PTX compiled here beforehand (`DSLLM_KERNEL_CACHE=.devbin/kernels ptx sm_90a --cache`, same
# NVRTC version) spares the first process its ~20 s NVRTC compile; a stale file is just unused.
mkdir -p $DSLLM_KERNEL_CACHE && cp .devbin/kernels/*.ptx $DSLLM_KERNEL_CACHE/ 2>/dev/null
SP=$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null)/nvidia
[ -d "$SP/cudnn/lib" ] && export LD_LIBRARY_PATH=$SP/cudnn/lib:$SP/cu13/lib:${LD_LIBRARY_PATH:-}
t0=$(date +%s); T() { echo "== $1: $(( $(date +%s) - t0 )) s" | tee -a $OUT/times.txt; }
NCONF=$(echo $CONFIGS | tr , '\n' | wc -l)
# fits SECONDS NAME: whether a step of about that many seconds ends within BUDGET_S.
fits() {
  local left=$(( ${BUDGET_S:-570} - ($(date +%s) - t0) ))
  [ "$1" -le $left ] && return 0
  echo "== skipped $2: about $1 s needed, $left s left" | tee -a $OUT/times.txt; return 1
}
torch_baseline() {
  fits $(( ${TORCH_S:-75} * NCONF )) torch || return
  timeout ${TORCH_TIMEOUT:-300} python3 .devbin/torch_llama.py $CONFIGS compile > $OUT/torch.log 2>&1; rm -f $OUT/torch_llama.json; T torch
}
timeout 150 .devbin/parity > $OUT/parity.log 2>&1
echo "parity rc $? ($(grep -c '^ok ' $OUT/parity.log) ok)"; grep -v '^ok ' $OUT/parity.log | tail -20; T parity
# Each run's JSON lines, tagged with its variant, into one file.
run() {
  local name=$1 settings=$2
  fits $(( ${BENCH_S:-35} * NCONF )) "$name" || return
  env ${settings//,/ } timeout ${BENCH_TIMEOUT:-120} .devbin/bench $CONFIGS 2>&1 | sed "s/^{/{\"variant\": \"$name\", /" >> $OUT/runs.jsonl
  T "$name"
}
for round in $(seq ${REPEAT:-1}); do
  run default ""
  if [ "$round" = 1 ] && [ -n "${TORCH_FIRST:-}" ] && [ -n "${TORCH-1}" ]; then torch_baseline; fi
  for v in ${VARIANTS:-}; do run "${v%%:*}" "${v#*:}"; done
done
if [ -n "${PROFILE-1}" ] && fits $(( ${BENCH_S:-35} * NCONF )) profile; then DSLLM_PROFILE=1 timeout 120 .devbin/bench $CONFIGS > $OUT/profile.jsonl 2>&1; T profile; fi
# TORCH_PROFILE=ds-1b: torch.compile's per-kernel GPU time of one step (torch_profile.py, copied
# into .devbin/ too) into torch_profile.txt, beside the profile above.
if [ -n "${TORCH_PROFILE:-}" ] && fits 120 torch_profile; then timeout 150 python3 .devbin/torch_profile.py $TORCH_PROFILE > $OUT/torch_profile.txt 2>&1; rm -f $OUT/torch-profile-*.json; T torch_profile; fi
if [ -z "${TORCH_FIRST:-}" ] && [ -n "${TORCH-1}" ]; then torch_baseline; fi
python3 - <<'PY'
import json, os
out = os.environ["OUT"]
read = lambda name: [json.loads(l) for l in open(f"{out}/{name}") if l.startswith("{")] if os.path.exists(f"{out}/{name}") else []
torch = {t["config"]: t["tokens_per_s"] for t in read("torch.log") if "tokens_per_s" in t}
print("torch.compile:", torch)
for r in read("runs.jsonl"):
    ratio = f", {r['tokens_per_s'] / torch[r['config']]:.3f}x" if r["config"] in torch else ""
    print(f"{r['variant']:>14} {r['config']:>10}: {r['tokens_per_s']:9.0f} tok/s, step {r['step_ms']:6.1f} ms, MFU {r['mfu']:.3f}, {r['peak_mem_gib']:.1f} GiB, loss {r.get('loss', r.get('final_loss', ''))}{ratio}")
    if r.get("stream_waits"):
        total = sum(w["total_ms"] for w in r["stream_waits"])
        top = ", ".join(f"{w['elements']}: {w['total_ms']:.2f} ms/{w['waits']}" for w in r["stream_waits"][:6])
        print(f"{'':>26} main stream waited {total:.2f} ms for AdamW (by buffer size: {top})")
for p in read("profile.jsonl"):
    print(f"profile {p['config']} ({p['step_ms']:.1f} ms step):")
    for op in p.get("profile", [])[:int(os.environ.get("TOPN", "20"))]:
        print(f"    {op['total_ms']:8.2f} ms {op['calls']:5d}x  {op['op']}")
PY
