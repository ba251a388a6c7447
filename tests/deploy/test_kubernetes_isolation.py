"""deploy/kubernetes/: what keeps the parts apart and the work safe, checked against the pods' labels and specs: the
restricted Pod Security Standard, the selectors of workloads and Services, the NetworkPolicies around Redis and the
disruption budgets."""

from __future__ import annotations

from deploy_facts import NAMESPACE, WORKER_TEMPLATES
from kube_objects import PodSpecOf, selects

pytest_plugins = ["deploy_fixtures"]

# The namespace enforces the restricted Pod Security Standard: a pod that breaks it is refused at creation (a worker
# pod too, when the scaler creates it). What it allows, from the standard's text (kubernetes.io, "Pod Security
# Standards", Restricted):
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip
RESTRICTED_SECCOMP = {"RuntimeDefault", "Localhost"}
RESTRICTED_ADDED_CAPABILITIES = {"NET_BIND_SERVICE"}
REDIS_CLIENTS = {"Deployment/scalablejob-scaler", "Deployment/scalablejob-frontend", *WORKER_TEMPLATES}


def test_every_pod_meets_the_restricted_pod_security_standard_the_namespace_enforces(manifests, pods):
    namespace = manifests.get("Namespace", NAMESPACE)["metadata"]["labels"]
    breaches = [f"{pod.source}: {breach}" for pod in pods for breach in _restricted_breaches(pod)]

    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    assert not breaches


def _restricted_breaches(pod: PodSpecOf) -> list[str]:
    spec, pod_context = pod.spec, pod.spec.get("securityContext", {})
    breaches = [
        f"volume {v['name']}" for v in spec.get("volumes", []) if not set(v) - {"name"} <= RESTRICTED_VOLUME_TYPES
    ]
    breaches += [f"spec.{field}" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field)]
    for container in pod.containers():
        context = container.get("securityContext", {})
        merged = {**pod_context, **context}
        capabilities = context.get("capabilities", {})
        breaches += [
            f"{container['name']}: {what}" for what, broken in (
                ("runAsNonRoot", merged.get("runAsNonRoot") is not True or merged.get("runAsUser") == 0),
                ("seccompProfile", merged.get("seccompProfile", {}).get("type") not in RESTRICTED_SECCOMP),
                ("allowPrivilegeEscalation", context.get("allowPrivilegeEscalation") is not False),
                ("privileged", context.get("privileged", False)),
                ("capabilities.drop ALL", "ALL" not in capabilities.get("drop", [])),
                ("capabilities.add", not set(capabilities.get("add", [])) <= RESTRICTED_ADDED_CAPABILITIES),
                ("hostPort", any("hostPort" in port for port in container.get("ports", []))),
            ) if broken
        ]  # fmt: skip
    return breaches


def test_each_workload_and_service_selects_its_own_pods(manifests, pods):
    for kind in ("Deployment", "StatefulSet"):
        for obj in manifests.of_kind(kind):
            source = f"{kind}/{obj['metadata']['name']}"
            assert [pod.source for pod in pods if selects(obj["spec"]["selector"], pod.labels)] == [source]
    for service in manifests.of_kind("Service"):
        selector = {"matchLabels": service["spec"]["selector"]}
        assert len([pod for pod in pods if selects(selector, pod.labels)]) == 1, service["metadata"]["name"]


def test_only_the_scaler_front_end_and_workers_may_reach_redis(manifests, pods):
    redis = next(pod for pod in pods if pod.source == "StatefulSet/scalablejob-redis")
    policies = [
        p["spec"] for p in manifests.of_kind("NetworkPolicy") if selects(p["spec"]["podSelector"], redis.labels)
    ]
    peers = [peer for policy in policies for rule in policy.get("ingress", []) for peer in rule.get("from", [])]
    open_rules = [rule for policy in policies for rule in policy.get("ingress", []) if "from" not in rule]
    allowed = {pod.source for peer in peers for pod in pods if selects(peer["podSelector"], pod.labels)}

    assert policies and all(policy["policyTypes"] == ["Ingress"] for policy in policies)
    assert not open_rules, "a rule without `from` lets anyone in"
    assert all(set(peer) == {"podSelector"} for peer in peers), "pods of this namespace only"
    assert allowed == REDIS_CLIENTS


def test_nothing_else_takes_connections_but_the_front_ends_port(manifests, pods):
    deny = manifests.get("NetworkPolicy", "scalablejob-default-deny-ingress")["spec"]
    reachable = {
        pod.source for policy in manifests.of_kind("NetworkPolicy") for pod in pods
        if policy["spec"].get("ingress") and selects(policy["spec"]["podSelector"], pod.labels)
    }  # fmt: skip

    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert reachable == {"StatefulSet/scalablejob-redis", "Deployment/scalablejob-frontend"}


def test_the_worker_budget_covers_the_workers_only_and_allows_no_eviction(manifests, pods, config):
    budget = manifests.get("PodDisruptionBudget", "scalablejob-worker")["spec"]

    assert {pod.source for pod in pods if selects(budget["selector"], pod.labels)} == set(WORKER_TEMPLATES)
    # Bare pods (no owner with a scale) take only an integer minAvailable; more than `max` keeps the disruptions
    # allowed at 0 however many workers run.
    assert "maxUnavailable" not in budget
    assert isinstance(budget["minAvailable"], int) and budget["minAvailable"] > config.autoscaler.max


def test_each_budget_covers_the_pods_of_one_part(manifests, pods):
    covered = {
        budget["metadata"]["name"]: {pod.source for pod in pods if selects(budget["spec"]["selector"], pod.labels)}
        for budget in manifests.of_kind("PodDisruptionBudget")
    }  # fmt: skip

    assert covered == {
        "scalablejob-worker": set(WORKER_TEMPLATES),
        "scalablejob-scaler": {"Deployment/scalablejob-scaler"},
        "scalablejob-frontend": {"Deployment/scalablejob-frontend"},
    }
