#!/usr/bin/env bash
# One command for a fresh GPU machine that already has torch (and no package registry):
# installs the project without dependencies, runs the CUDA tests, the LUT-GEMM benchmark and the
# ResNet-18 training step on the GPU, and writes one JSON per stage plus summary.json (targets on
# an H100/H200: forward >= 8 T-LUT-MAC/s at 7 bits and >= 4 at 8 bits, LUT-gradient training
# step <= 3x the float step). Each stage has its own timeout and its JSON is written whatever
# later stages do; the exit status is non-zero when a stage failed or a target was missed.
#
#   bench/gpu_check.sh [OUT_DIR]          (default: $OUT, else ./gpu_check_out)
#   GPU_CHECK_DRY=1 bench/gpu_check.sh    rehearsal without a GPU: device cpu, short stages,
#                                         no install; targets are reported, not enforced
#   GPU_CHECK_STAGES="env tests"          run only these stages (env install tests bench e2e)
#   GPU_CHECK_TESTS="tests/ops"           pytest arguments of the tests stage
#   PYTHON=...                            the interpreter (default: python)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
python="${PYTHON:-python}"
dry="${GPU_CHECK_DRY:-0}"
stages="${GPU_CHECK_STAGES:-env install tests bench e2e}"
export PYTHONUNBUFFERED=1
if [[ "$dry" == 1 ]]; then
  device=cpu
  stages="${GPU_CHECK_STAGES:-env tests bench e2e}"
  tests=(tests/ops/test_cuda_emulated.py tests/ops/test_kernels_cuda.py)
  bench_args=(--bits 7 --no-vit --repeats 1 --reference-rows 16)
  e2e_args=(--batch 2)
  limits=(env=60 install=120 tests=300 bench=600 e2e=300)
else
  device=cuda
  tests=(tests/ops/test_kernels_cuda.py tests/ops/test_cuda_emulated.py
         tests/ops/test_fp_gemm.py::test_cuda_kernel_is_bit_identical_to_reference)
  bench_args=(--bits 7 8 --repeats 5)
  e2e_args=(--batch 16)
  limits=(env=20 install=40 tests=230 bench=90 e2e=90)  # 470 s at most: under 8 minutes
fi
[[ -n "${GPU_CHECK_TESTS:-}" ]] && read -r -a tests <<< "$GPU_CHECK_TESTS"

limit_of() {  # seconds allowed for stage $1
  local kv
  for kv in "${limits[@]}"; do [[ "${kv%%=*}" == "$1" ]] && echo "${kv#*=}" && return; done
  echo 60
}

# run_stage NAME COMMAND...: runs with a timeout, logs to NAME.log, writes stage_NAME.json.
run_stage() {
  local name="$1" rc=0 start end
  shift
  start=$(date +%s.%N)
  timeout --kill-after=10 "$(limit_of "$name")" "$@" > "$out/$name.log" 2>&1 || rc=$?
  end=$(date +%s.%N)
  "$python" - "$out" "$name" "$rc" "$start" "$end" <<'PY'
import json, os, sys
out, name, rc, start, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), *map(float, sys.argv[4:])
with open(os.path.join(out, f"{name}.log"), errors="replace") as fh:
    tail = fh.read()[-4000:]
record = {"stage": name, "rc": rc, "timed_out": rc in (124, 137), "seconds": round(end - start, 1),
          "log_tail": tail}
tmp = os.path.join(out, f".stage_{name}.json.tmp")
with open(tmp, "w") as fh:
    json.dump(record, fh, indent=1)
os.replace(tmp, os.path.join(out, f"stage_{name}.json"))
PY
  echo "gpu_check: stage $name rc=$rc ($(limit_of "$name") s allowed)" >&2
  return 0
}

read -r -d '' env_py <<'PY' || true
import json, os, platform, sys
import torch
info = {"python": platform.python_version(), "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "requested_device": sys.argv[2]}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, sms=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30))
json.dump(info, open(sys.argv[1] + ".tmp", "w"), indent=1)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
print(json.dumps(info))
sys.exit(0 if info["cuda_available"] or sys.argv[2] == "cpu" else 3)
PY

for stage in $stages; do
  case "$stage" in
    env) run_stage env "$python" -c "$env_py" "$out/env.json" "$device" ;;
    install) run_stage install "$python" -m pip install --no-deps --no-build-isolation -e . ;;
    tests) run_stage tests "$python" -m pytest -q -p no:cacheprovider -rs \
             --junitxml="$out/tests.xml" "${tests[@]}" ;;
    bench) run_stage bench "$python" bench/lut_gemm.py --device "$device" "${bench_args[@]}" \
             --json "$out/lut_gemm.json" ;;
    e2e) run_stage e2e bash -c "set -o pipefail; '$python' bench/e2e_resnet18.py --device $device ${e2e_args[*]} \
             | tail -n 1 > '$out/e2e.json.tmp' && mv '$out/e2e.json.tmp' '$out/e2e.json'" ;;
    *) echo "gpu_check: unknown stage $stage" >&2; exit 2 ;;
  esac
done

"$python" bench/gpu_check_summary.py "$out" --enforce "$([[ "$dry" == 1 ]] && echo 0 || echo 1)"
