#!/usr/bin/env bash
# Checks real GPU pinning on an NVIDIA machine: the scaler starts one worker per GPU (metadata.gpu 1), each
# worker runs a command task that asks the CUDA driver (libcuda, through ctypes) which devices it sees, and every
# worker must see exactly one device, its own, all different, together the GPUs nvidia-ml-py lists.
#
# Usage: bench/gpu_check.sh            (PYTHON=... to choose the interpreter; default: python3)
#        GPU_CHECK_FAKE=2 bench/gpu_check.sh   dry run without GPUs: fake inventory, checks CUDA_VISIBLE_DEVICES only
# Exit: 0 pinning verified; 1 pinning wrong; 2 no NVIDIA GPU or driver here (nothing checked).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ -z "${GPU_CHECK_FAKE:-}" ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU or driver on this machine (nvidia-smi missing or failing): nothing checked" >&2
    exit 2
  fi
  nvidia-smi -L
fi

exec timeout 300 "$PYTHON" - <<'PY'
import json, os, sys

from scalablejob import JobClient
from scalablejob.model.errors import GpuError
from scalablejob.host.gpus import NvmlInventory, fake_gpus
from scalablejob.local.scaler_process import poll, scaler_rig

FAKE = int(os.environ.get("GPU_CHECK_FAKE") or 0)
PROBE = r"""
import ctypes, json, os, time
seen = {"visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
try:
    if not int(os.environ.get("GPU_CHECK_FAKE") or 0):
        cuda = ctypes.CDLL("libcuda.so.1")
        count, device, raw = ctypes.c_int(), ctypes.c_int(), (ctypes.c_ubyte * 16)()
        assert cuda.cuInit(0) == 0, "cuInit failed"
        assert cuda.cuDeviceGetCount(ctypes.byref(count)) == 0, "cuDeviceGetCount failed"
        seen["count"] = count.value
        if count.value:
            assert cuda.cuDeviceGet(ctypes.byref(device), 0) == 0 and cuda.cuDeviceGetUuid(raw, device) == 0
            h = bytes(raw).hex()
            seen["uuid"] = f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
except Exception as exc:
    seen["error"] = repr(exc)
print(json.dumps(seen))
time.sleep(3)  # hold the worker, so that each task lands on a different one
"""

try:
    gpus = fake_gpus(FAKE) if FAKE else NvmlInventory().gpus()
except GpuError as exc:
    sys.exit(f"gpu_check: {exc}")
expected = {gpu.uuid for gpu in gpus}
count = min(len(gpus), 8)
if count == 0:
    sys.exit("gpu_check: nvidia-ml-py lists no GPU")
config = {"metadata": {"name": "gpucheck", "type": "ScalableJob", "gpu": 1, "instance": count},
          "autoscaler": {"min": count, "max": count}}
with scaler_rig(config, *(["--fake-gpus", str(FAKE)] if FAKE else [])) as rig:
    with JobClient("gpucheck", rig.broker_url) as client:
        poll(lambda: list(rig.scaler.workers().values()) == ["idle"] * count, 120, f"{count} idle workers")
        ids = [client.put(json.dumps(["python", "-c", PROBE]), {"taskType": "command"})[1] for _ in range(count)]
        results = [client.result(request_id, timeout=120) for request_id in ids]

seen = [json.loads(entry.data.decode().strip().splitlines()[0]) for entry in results]
problems = []
visible = [item["visible"] for item in seen]
if len(set(visible)) != count:
    problems.append(f"CUDA_VISIBLE_DEVICES not one distinct GPU per worker: {visible}")
if not set(visible) <= expected:
    problems.append(f"CUDA_VISIBLE_DEVICES names GPUs nvidia-ml-py does not list: {visible}")
for item in seen:
    if "error" in item:
        problems.append(f"a worker pinned to {item['visible']} could not ask CUDA: {item['error']}")
    elif "count" in item and (item["count"] != 1 or item.get("uuid") != item["visible"]):
        problems.append(f"a worker pinned to {item['visible']} sees {item['count']} device(s), first {item.get('uuid')}")
for line in seen:
    print("gpu_check: worker saw", json.dumps(line))
if problems:
    sys.exit("gpu_check: FAILED\n  " + "\n  ".join(problems))
print(f"gpu_check: OK, {count} workers, each pinned to its own GPU" + (" (fake inventory, CUDA not asked)" if FAKE else ""))
PY
