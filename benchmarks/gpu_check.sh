#!/usr/bin/env bash
# The GPU check: one script, one H100/H200, under 8 minutes. It measures
#   (a) training of a GPT-2-small-size student (12 layers, width 768, 1024 positions, from config), bf16, without
#       and with DeepSpeed ZeRO-2, through the harness's transformers student: useful tokens/s and model-FLOPs
#       utilisation (target >= 35%);
#   (b) the quickstart students' evaluation on the GPU (hf backend) against the CPU figure;
# and writes benchmarks/results/gpu_check.json (under $OUT too when the device tool's $OUT is set; a dry run
# writes a temporary file instead).
#
#   bash benchmarks/gpu_check.sh            on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run  here, on the CPU: the same code, a tiny model, a few steps
#
# The device machine has torch and transformers but not lm-eval, datasets, deepspeed or this package, and cannot
# download. Bring them as wheels, here, in the repository's root (see the device entry's README in the tool
# library), then carry .whl and the quickstart run:
#   echo /.whl/ >> .git/info/exclude
#   P="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
#      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
#   .venv/bin/pip wheel --no-deps -w .whl .                    # this package (pure Python)
#   .venv/bin/pip download --no-deps $P -d .whl lm_eval datasets evaluate sacrebleu rouge-score pytablewriter \
#       sqlitedict word2number more-itertools jsonlines peft accelerate pluggy rich hjson ninja py-cpuinfo \
#       msgpack pyarrow dill multiprocess xxhash                # pin each to constraints.txt's version
#   .venv/bin/pip wheel --no-deps -w .whl deepspeed==$(grep -i '^deepspeed==' constraints.txt | cut -d= -f3)
#   (runs/quickstart: `make quickstart` first; it is a few MB.)
# and in the device call: carry [".whl", "runs/quickstart"] and run `bash benchmarks/gpu_check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ] && ! python3 -c 'import harness, lm_eval, deepspeed' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
PY=python3
[ -x .venv/bin/python ] && [ "${1:-}" = "--dry-run" ] && PY=.venv/bin/python
export PYTHONUNBUFFERED=1
"$PY" benchmarks/gpu_check.py "$@"
if [ -n "${OUT:-}" ] && [ -f benchmarks/results/gpu_check.json ]; then cp benchmarks/results/gpu_check.json "$OUT/"; fi
