"""GPU inventory and assignment: pinning by UUID, bounded by the GPUs there are, a clear error without a driver."""

from __future__ import annotations

import pytest

from scalablejob.host.gpus import (
    Gpu,
    NvmlInventory,
    StaticInventory,
    assign_gpus,
    check_gpus,
    cuda_visible_devices,
    fake_gpus,
    own_gpus,
    visible_gpus,
    worker_capacity,
)
from scalablejob.model.errors import GpuError

FOUR = fake_gpus(4)


def uuids(gpus: tuple[Gpu, ...] | None) -> list[str] | None:
    return None if gpus is None else [gpu.uuid for gpu in gpus]


@pytest.mark.parametrize(
    ("in_use", "per_worker", "expected"),
    [
        (set(), 1, ["GPU-fake-0000"]),
        ({"GPU-fake-0000"}, 1, ["GPU-fake-0001"]),
        ({"GPU-fake-0001"}, 2, ["GPU-fake-0000", "GPU-fake-0002"]),
        ({"GPU-fake-0000", "GPU-fake-0001", "GPU-fake-0002"}, 2, None),  # too few free
        ({"GPU-fake-0000"}, 0, []),  # CPU workers need none
    ],
)
def test_assign_gpus_takes_the_first_free_ones(in_use: set[str], per_worker: int, expected: list[str] | None) -> None:
    assert uuids(assign_gpus(FOUR, in_use, per_worker)) == expected


def test_pinning_is_by_uuid_and_cpu_workers_see_no_gpu() -> None:
    assert cuda_visible_devices(FOUR[1:3]) == "GPU-fake-0001,GPU-fake-0002"
    assert cuda_visible_devices(()) == ""


@pytest.mark.parametrize(
    ("count", "per_worker", "capacity"), [(4, 1, 4), (4, 2, 2), (3, 2, 1), (0, 1, 0), (4, 0, None)]
)
def test_worker_capacity(count: int, per_worker: int, capacity: int | None) -> None:
    assert worker_capacity(fake_gpus(count), per_worker) == capacity


@pytest.mark.parametrize(
    ("env", "expected"),
    [(None, [0, 1, 2, 3]), ("1,3", [1, 3]), ("GPU-fake-0002", [2]), ("", []), (" 0 , GPU-fake-0003", [0, 3])],
)
def test_the_scaler_hands_out_only_the_gpus_it_may_see(env: str | None, expected: list[int]) -> None:
    assert [gpu.index for gpu in visible_gpus(FOUR, env)] == expected


def test_workers_needing_more_gpus_than_there_are_is_an_error_naming_the_field() -> None:
    check_gpus(FOUR, 4)
    with pytest.raises(GpuError, match=r"metadata.gpu is 5: expected at most the 4 GPU\(s\)"):
        check_gpus(FOUR, 5)


def test_the_fake_inventory_lists_made_up_gpus() -> None:
    listed = StaticInventory(fake_gpus(2)).gpus()
    assert listed == (Gpu(0, "GPU-fake-0000", "fake GPU"), Gpu(1, "GPU-fake-0001", "fake GPU"))
    with pytest.raises(GpuError, match="expected an integer >= 0"):
        fake_gpus(-1)


def test_without_an_nvidia_driver_listing_gpus_is_a_clear_error() -> None:
    try:
        gpus = NvmlInventory().gpus()
    except GpuError as exc:
        assert "expected an NVIDIA driver" in str(exc) and "metadata.gpu 0" in str(exc)
    else:
        pytest.skip(f"this machine has a working NVIDIA driver ({len(gpus)} GPUs)")


@pytest.mark.parametrize(
    ("env", "shown"),
    [
        (
            {"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b", "NVIDIA_VISIBLE_DEVICES": "all"},
            "GPU-a,GPU-b",
        ),  # pinned by the scaler
        ({"CUDA_VISIBLE_DEVICES": ""}, ""),  # a CPU worker of the scaler's
        ({"NVIDIA_VISIBLE_DEVICES": "GPU-5d3c"}, "GPU-5d3c"),  # a Kubernetes pod given nvidia.com/gpu: 1
        ({"NVIDIA_VISIBLE_DEVICES": "all"}, ""),  # a CUDA image on a node that gave it none
        ({"NVIDIA_VISIBLE_DEVICES": "void"}, ""),
        ({}, ""),
    ],
)
def test_a_workers_own_gpus_come_from_its_pinning_or_from_its_container_runtime(env, shown):
    assert own_gpus(env) == shown
