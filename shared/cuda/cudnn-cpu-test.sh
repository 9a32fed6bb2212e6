#!/usr/bin/env bash
# The cuDNN attention graphs' CPU test (shared/cuda/src/cudnn_attention): every tensor and
# operation descriptor of every graph variant must finalize in the cuDNN the GPU machine runs
# (9.19). Fetches that cuDNN's wheel from PyPI once (cached), and a stub libcuda.so.1 stands in
# for the driver cuDNN's engine library links against (no GPU is touched: plans are not built).
# Skips, saying why, where PyPI or a C compiler is missing.
set -euo pipefail
cache="${DSLLM_CUDNN_CACHE:-$HOME/.cache/dsllm-cudnn}"
lib="$cache/nvidia/cudnn/lib"
mkdir -p "$cache"
if [ ! -f "$lib/libcudnn_engines_runtime_compiled.so.9" ]; then
  if ! ls "$cache"/nvidia_cudnn_cu13-9.19.*.whl >/dev/null 2>&1 &&
     ! python3 -m pip download --quiet --no-deps "nvidia-cudnn-cu13==9.19.*" -d "$cache" 2>/dev/null; then
    echo "skipping the cuDNN graph test: cannot download nvidia-cudnn-cu13 9.19 from PyPI"; exit 0
  fi
  python3 - "$cache" <<'PY'
import glob, sys, zipfile
cache = sys.argv[1]
wheel = zipfile.ZipFile(sorted(glob.glob(f"{cache}/nvidia_cudnn_cu13-9.19.*.whl"))[-1])
for name in ["libcudnn.so.9", "libcudnn_graph.so.9", "libcudnn_engines_runtime_compiled.so.9"]:
    wheel.extract(f"nvidia/cudnn/lib/{name}", cache)
PY
fi
if [ ! -f "$cache/stub/libcuda.so.1" ]; then
  command -v cc >/dev/null || { echo "skipping the cuDNN graph test: no C compiler for the libcuda stub"; exit 0; }
  mkdir -p "$cache/stub"
  # The driver functions libcudnn_engines_runtime_compiled.so.9 imports; each fails as "no device".
  for f in cuGetErrorString cuModuleGetFunction cuModuleLoadData cuModuleUnload cuTensorMapEncodeIm2col cuTensorMapEncodeTiled; do
    echo "int $f(void) { return 100; }"
  done > "$cache/stub/cuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$cache/stub/libcuda.so.1" "$cache/stub/cuda_stub.c"
fi
LD_LIBRARY_PATH="$lib:$cache/stub" DSLLM_REQUIRE_CUDNN=1 ${CARGO:-cargo} test -p dsllm-cuda --lib cudnn_attention
