"""What a pod's status says of its worker: ended or not, its exit code, why it waits. Pure: the API's JSON in."""

from __future__ import annotations

from scalablejob.scaler.pod_status import PodState, created_at, pending_remark, pod_state

UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}  # fmt: skip


def pod(phase: str | None, **status: object) -> dict[str, object]:
    return {"metadata": {"name": "p"}, "status": {"phase": phase, **status} if phase else {}}


def terminated(code: int, reason: str = "Error") -> list[dict[str, object]]:
    return [{"name": "worker", "state": {"terminated": {"exitCode": code, "reason": reason}}}]


def test_a_pod_killed_by_signal_9_ended_with_137_and_says_so() -> None:
    state = pod_state(pod("Failed", containerStatuses=terminated(137)))
    assert state.ended and state.exit_code == 137 and state.reason == "Error"


def test_an_evicted_pod_ended_with_the_kubelets_reason_and_no_exit_code() -> None:
    state = pod_state(pod("Failed", reason="Evicted", message="The node was low on resource: memory."))
    assert state.ended and state.exit_code is None
    assert state.reason == "Evicted: The node was low on resource: memory."


def test_a_pod_without_status_yet_is_pending() -> None:
    assert pod_state(pod(None)).pending


def test_an_unschedulable_pod_says_the_schedulers_message_and_an_image_pull_its_waiting_reason() -> None:
    assert pod_state(pod("Pending", conditions=[UNSCHEDULABLE])).reason == (
        "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    )
    waiting = [{"name": "worker", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]
    assert pod_state(pod("Pending", containerStatuses=waiting)).reason == "ImagePullBackOff"


def test_a_deleted_pending_pod_no_longer_counts_as_pending() -> None:
    found = pod("Pending")
    found["metadata"] = {"name": "p", "deletionTimestamp": "2026-12-07T00:00:00Z"}
    assert not pod_state(found).pending


def test_the_remark_counts_the_pending_pods_says_for_how_long_and_why() -> None:
    states = [PodState("a", "Running"), PodState("b", "Pending", reason="Unschedulable: no GPU"),
              PodState("c", "Pending", reason="Unschedulable: no GPU")]  # fmt: skip
    remark = pending_remark(states, {"b": 10.0, "c": 20.0}, now=25.0)
    assert remark == "2 pod(s) Pending for up to 15 s (counted as starting, against max): Unschedulable: no GPU"
    assert pending_remark(states[:1], {}, now=25.0) == ""


def test_the_creation_time_is_read_as_a_unix_time() -> None:
    assert created_at({"metadata": {"creationTimestamp": "1970-01-01T00:01:40Z"}}) == 100.0
    assert created_at({"metadata": {}}) == 0.0
