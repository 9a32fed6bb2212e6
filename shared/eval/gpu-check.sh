#!/usr/bin/env bash
# On a GPU machine: ds-eval's per-item log-likelihoods with the CUDA backend against
# lm-evaluation-harness + transformers on the fixture checkpoint (tests/fixtures/tiny).
#
#   shared/eval/gpu-check.sh [PYTHON]
#
# Builds ds-eval (unless $CARGO_TARGET_DIR/release/ds-eval exists), runs the fixture tasks with --backend cuda in both scoring modes, and compares
# every request with tests/fixtures/lm_eval_reference.json (transformers on the CPU, float32;
# the CI fixture). If PYTHON imports torch, transformers, accelerate and lm_eval, the reference
# is also recomputed with transformers on the GPU (TF32 off) and compared. Fails when any
# request differs by more than 1e-3 per token.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${1:-python3}"
FIXTURES=shared/eval/tests/fixtures
TARGET="${CARGO_TARGET_DIR:-target}"
# The GPU machine has no Rust: carry a release build there and point CARGO_TARGET_DIR at it.
[ -x "$TARGET/release/ds-eval" ] || cargo build --release -p ds-eval
OUT="$(mktemp -d)"
for scoring in ${SCORINGS:-prefix full}; do
  "$TARGET/release/ds-eval" run --model "$FIXTURES/tiny" --tasks "$FIXTURES/qa.toml" "$FIXTURES/winograd.toml" \
    "$FIXTURES/cloze.toml" --data-root "$FIXTURES" --output "$OUT/$scoring" --backend cuda --scoring "$scoring" --force
done
references=("$FIXTURES/lm_eval_reference.json")
if "$PYTHON" -c "import torch, transformers, accelerate, lm_eval; assert torch.cuda.is_available()" 2>/dev/null; then
  "$PYTHON" "$FIXTURES/lm_eval_reference.py" "$FIXTURES" "$OUT/reference-cuda.json" --device cuda
  references+=("$OUT/reference-cuda.json")
else
  echo "gpu-check: $PYTHON lacks torch/transformers/lm_eval with CUDA: comparing with the CPU reference only"
fi
python3 - "$OUT" "${references[@]}" <<'PY'
import json, os, sys
out, refs = sys.argv[1], sys.argv[2:]
worst = 0.0
for ref_path in refs:
    ref = json.load(open(ref_path))
    for scoring in os.environ.get("SCORINGS", "prefix full").split():
        results = json.load(open(f"{out}/{scoring}/results.json"))
        assert results["backend"].startswith("cuda"), results["backend"]
        for task in results["tasks"]:
            for item, want in zip(task["per_item"], ref["tasks"][task["name"]]):
                got = item.get("logprobs", [item.get("logprob")]) + item.get("logprobs_unconditional", [])
                for g, w, n in zip(got, want["logprobs"], want["tokens"]):
                    d = abs(g - w) / n
                    worst = max(worst, d)
                    if d > 1e-3:
                        sys.exit(f"gpu-check FAILED: {task['name']} ({scoring}, vs {ref_path}): {g} vs {w} over {n} tokens")
    print(f"gpu-check: matches {ref_path} ({ref['device']}, transformers {ref['transformers']})")
print(f"gpu-check OK: max difference per token {worst:.2e}")
PY
