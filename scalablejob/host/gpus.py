"""GPUs: which ones this machine has (nvidia-ml-py), and which ones each worker gets (pure assignment).

Workers are pinned with CUDA_VISIBLE_DEVICES set to GPU UUIDs: NVML lists GPUs in PCI bus order while CUDA
numbers them fastest first by default, so indices could name a different card; a UUID cannot.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from scalablejob.model.errors import GpuError

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
NO_GPU = ""  # CUDA_VISIBLE_DEVICES for CPU workers: they must not grab a GPU another worker owns
# what NVIDIA's container runtime and Kubernetes device plugin set to the GPUs a container got (UUIDs or indexes); a
# CUDA image sets it to `all` even where no GPU was given, so only a list of devices counts
NVIDIA_VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
_NOT_A_DEVICE_LIST = ("", "all", "none", "void")


@dataclass(frozen=True, order=True)
class Gpu:
    """One GPU as NVML reports it."""

    index: int
    uuid: str
    name: str = ""


class GpuInventory(Protocol):
    """Lists the GPUs of this machine."""

    def gpus(self) -> tuple[Gpu, ...]: ...


class NvmlInventory:
    """The real inventory, read through nvidia-ml-py; without a working NVIDIA driver it raises GpuError."""

    def gpus(self) -> tuple[Gpu, ...]:
        try:
            import pynvml  # nvidia-ml-py; imported here so CPU-only commands never load it
        except ImportError as exc:  # pragma: no cover - declared dependency
            raise GpuError(f"nvidia-ml-py is not installed ({exc}): expected it to list the GPUs") from exc
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise GpuError(
                f"cannot list GPUs: NVML failed to start ({exc}); expected an NVIDIA driver on this machine, "
                "or metadata.gpu 0 for CPU workers"
            ) from None
        try:
            return tuple(_nvml_gpu(pynvml, index) for index in range(pynvml.nvmlDeviceGetCount()))
        finally:
            pynvml.nvmlShutdown()


class StaticInventory:
    """A fixed list of GPUs: the fake inventory (`fake_gpus`) of tests and of machines without GPUs."""

    def __init__(self, gpus: Iterable[Gpu]) -> None:
        self._gpus = tuple(gpus)

    def gpus(self) -> tuple[Gpu, ...]:
        return self._gpus


def _nvml_gpu(pynvml: object, index: int) -> Gpu:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)  # type: ignore[attr-defined]
    uuid = pynvml.nvmlDeviceGetUUID(handle)  # type: ignore[attr-defined]
    name = pynvml.nvmlDeviceGetName(handle)  # type: ignore[attr-defined]
    return Gpu(index, _text(uuid), _text(name))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def own_gpus(env: Mapping[str, str]) -> str:
    """The GPUs this worker was given, as its presence shows them: CUDA_VISIBLE_DEVICES where the scaler pinned it,
    else the devices a container runtime gave it (a Kubernetes pod's `nvidia.com/gpu`), else none."""
    if CUDA_VISIBLE_DEVICES in env:
        return env[CUDA_VISIBLE_DEVICES]
    given = env.get(NVIDIA_VISIBLE_DEVICES, "").strip()
    return NO_GPU if given.lower() in _NOT_A_DEVICE_LIST else given


def visible_gpus(gpus: Iterable[Gpu], cuda_visible_devices: str | None) -> tuple[Gpu, ...]:
    """The GPUs this process may hand out: all, or those its own CUDA_VISIBLE_DEVICES names (index or UUID)."""
    if cuda_visible_devices is None:
        return tuple(gpus)
    allowed = {item.strip() for item in cuda_visible_devices.split(",") if item.strip()}
    return tuple(gpu for gpu in gpus if str(gpu.index) in allowed or gpu.uuid in allowed)


def worker_capacity(gpus: Sequence[Gpu], per_worker: int) -> int | None:
    """How many workers the GPUs allow; None when workers need no GPU (no bound)."""
    return None if per_worker == 0 else len(gpus) // per_worker


def check_gpus(gpus: Sequence[Gpu], per_worker: int) -> None:
    """Refuse a config whose workers need more GPUs than the machine has, naming the field."""
    if per_worker > len(gpus):
        raise GpuError(
            f"metadata.gpu is {per_worker}: expected at most the {len(gpus)} GPU(s) this machine makes visible"
        )


def assign_gpus(gpus: Sequence[Gpu], in_use: Collection[str], per_worker: int) -> tuple[Gpu, ...] | None:
    """The GPUs for one more worker: the first `per_worker` free ones by index; None when too few are free."""
    if per_worker == 0:
        return ()
    free = [gpu for gpu in sorted(gpus) if gpu.uuid not in in_use]
    return tuple(free[:per_worker]) if len(free) >= per_worker else None


def cuda_visible_devices(gpus: Iterable[Gpu]) -> str:
    """The CUDA_VISIBLE_DEVICES value that pins a worker to exactly these GPUs (empty: no GPU)."""
    return ",".join(gpu.uuid for gpu in gpus) or NO_GPU


def fake_gpus(count: int) -> tuple[Gpu, ...]:
    """A made-up inventory of `count` GPUs with stable UUIDs, for tests and machines without GPUs."""
    if count < 0:
        raise GpuError(f"fake GPU count: expected an integer >= 0, got {count}")
    return tuple(Gpu(index, f"GPU-fake-{index:04d}", "fake GPU") for index in range(count))
