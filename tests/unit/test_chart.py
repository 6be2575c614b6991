"""The Helm chart: `helm lint --strict`, values checked by values.schema.json, and what it renders.

Runs the helm that hack/build-tools.sh builds; no cluster is needed (`helm template`).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.gen_crds import CRD_DIR
from testbed.cluster import REPO_ROOT, tools_bin_dir

CHART = REPO_ROOT / "charts" / "lbpair-operator"
# testbed/operator.py renders the chart as this release and runs the operator as this ServiceAccount.
RELEASE = "lbpair-operator"
STANDARD_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools_bin_dir() / "helm"), *args], capture_output=True, text=True, check=check, timeout=60
    )


def render(*args: str) -> list[dict[str, Any]]:
    rendered = helm("template", RELEASE, str(CHART), "--namespace", "lbpair-system", *args).stdout
    return [document for document in yaml.safe_load_all(rendered) if document]


def deployment(*args: str) -> dict[str, Any]:
    (found,) = [document for document in render(*args) if document["kind"] == "Deployment"]
    return found


def operator_container(*args: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment(*args)["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def test_chart_passes_helm_lint_strict() -> None:
    result = helm("lint", "--strict", str(CHART), check=False)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "setting",
    [
        "replica=2",  # unknown top-level key
        "leaderElection.leaseSeconds=1",  # too short to renew in time
        "image.digest=sha256:0",  # unknown nested key
        "livenessProbe.path=/other",  # the probe's target is fixed by the chart
        "hostNetwork=yes",  # wrong type
        "image.pullPolicy=Sometimes",  # not an allowed value
        "metrics.serviceMonitor.interval=often",  # not a Prometheus duration
        "passThreads=0",  # no thread for any pair's passes
    ],
)
def test_values_outside_the_schema_are_rejected(setting: str) -> None:
    result = helm("template", RELEASE, str(CHART), "--set", setting, check=False)

    assert result.returncode != 0
    assert "schema" in result.stderr, result.stderr


def test_deployment_has_a_liveness_probe_on_kopfs_endpoint() -> None:
    container = operator_container()

    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert container["ports"][0] == {"name": "health", "containerPort": 8080, "protocol": "TCP"}
    probe = container["livenessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": "health"}
    assert probe["periodSeconds"] > 0
    assert probe["failureThreshold"] > 0


def test_health_port_is_configurable() -> None:
    container = operator_container("--set", "healthPort=9440")

    assert "--liveness=http://0.0.0.0:9440/healthz" in container["args"]
    assert container["ports"][0]["containerPort"] == 9440


def test_deployment_runs_non_root_read_only_without_capabilities() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_deployment_has_resources() -> None:
    resources = operator_container()["resources"]

    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "memory" in resources["limits"]


def test_host_network_is_off_by_default_and_can_be_turned_on() -> None:
    default = deployment()["spec"]["template"]["spec"]
    on = deployment("--set", "hostNetwork=true")["spec"]["template"]["spec"]

    assert "hostNetwork" not in default
    assert on["hostNetwork"] is True
    assert on["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_scheduling_values_reach_the_pod(tmp_path: Path) -> None:
    scheduling = {
        "nodeSelector": {"lbpair.dev/management-network": "true"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "lb", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                    ]
                }
            }
        },
    }
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(scheduling))

    pod = deployment("--values", str(values))["spec"]["template"]["spec"]

    assert {key: pod[key] for key in scheduling} == scheduling


def test_every_object_has_the_standard_labels() -> None:
    documents = render()

    for document in documents:
        assert set(document["metadata"]["labels"]) >= STANDARD_LABELS, document["kind"]
    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert set(pod_labels) >= STANDARD_LABELS


def test_selector_is_unchanged_since_the_first_chart() -> None:
    """A Deployment's selector is immutable: changing it would make `helm upgrade` fail."""
    selector = deployment()["spec"]["selector"]

    assert selector == {
        "matchLabels": {"app.kubernetes.io/name": "lbpair-operator", "app.kubernetes.io/instance": RELEASE}
    }


def test_rbac_objects_keep_the_names_the_test_bed_uses() -> None:
    names = {(document["kind"], document["metadata"]["name"]) for document in render()}

    assert names == {
        ("ServiceAccount", RELEASE),
        ("ClusterRole", RELEASE),
        ("ClusterRoleBinding", RELEASE),
        ("Deployment", RELEASE),
        ("Service", f"{RELEASE}-metrics"),
        ("Role", f"{RELEASE}-leader"),
        ("RoleBinding", f"{RELEASE}-leader"),
    }


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [document for document in documents if document["kind"] == kind]


def test_metrics_are_served_on_their_own_port_behind_a_service() -> None:
    documents = render()
    (container,) = of_kind(documents, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    (service,) = of_kind(documents, "Service")

    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    assert {"name": "LBPAIR_METRICS_PORT", "value": "9090"} in container["env"]
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = of_kind(documents, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["metadata"]["annotations"]["prometheus.io/port"] == "9090"
    assert of_kind(documents, "ServiceMonitor") == []  # off by default: it needs the Prometheus Operator


def test_metrics_port_zero_turns_the_endpoint_off() -> None:
    documents = render("--set", "metrics.port=0")
    (container,) = of_kind(documents, "Deployment")[0]["spec"]["template"]["spec"]["containers"]

    assert [port["name"] for port in container["ports"]] == ["health"]
    assert {"name": "LBPAIR_METRICS_PORT", "value": "0"} in container["env"]
    assert of_kind(documents, "Service") == []


def test_metrics_port_must_differ_from_the_health_port() -> None:
    result = helm("template", RELEASE, str(CHART), "--set", "metrics.port=8080", check=False)

    assert result.returncode != 0
    assert "metrics.port must differ from healthPort" in result.stderr


def test_service_monitor_scrapes_the_metrics_service_when_turned_on() -> None:
    settings = (
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=prom",
    )
    documents = render(*settings)
    (monitor,) = of_kind(documents, "ServiceMonitor")
    (service,) = of_kind(documents, "Service")

    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    assert helm("lint", "--strict", str(CHART), *settings, check=False).returncode == 0


def test_chart_ships_the_generated_crds() -> None:
    """Helm installs crds/ on the first install only (README: upgrading the CRDs)."""
    crds = [
        document for document in render("--include-crds") if document["kind"] == "CustomResourceDefinition"
    ]

    assert (CHART / "crds").resolve() == CRD_DIR
    assert sorted(crd["metadata"]["name"] for crd in crds) == sorted(
        yaml.safe_load(path.read_text())["metadata"]["name"] for path in CRD_DIR.glob("*.yaml")
    )


def rendered_notes(tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` prints it (helm template skips NOTES, and install needs a cluster)."""
    chart = Path(tempfile.mkdtemp(dir=tmp_path)) / "chart"
    shutil.copytree(CHART, chart)
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    indented = "".join(f"  {line}" for line in notes.splitlines(keepends=True))
    (chart / "templates" / "notes-as-yaml.yaml").write_text(f"notes: |\n{indented}")
    rendered = helm(
        "template",
        RELEASE,
        str(chart),
        "--namespace",
        "lbpair-system",
        "--show-only",
        "templates/notes-as-yaml.yaml",
        *args,
    ).stdout
    text: str = yaml.safe_load(rendered)["notes"]
    return text


def test_notes_tell_how_to_check_the_operator_and_upgrade_the_crds(tmp_path: Path) -> None:
    notes = rendered_notes(tmp_path)

    assert "kubectl -n lbpair-system rollout status deployment/lbpair-operator" in notes
    assert "kubectl apply --server-side --force-conflicts -f crds/" in notes
    assert "nodes' network" not in notes
    assert "nodes' network (health port 8080" in rendered_notes(tmp_path, "--set", "hostNetwork=true")


def secret_rules(documents: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """(kind, namespace) of each role granting Secret access -> its verbs."""
    return {
        (document["kind"], document["metadata"].get("namespace", "")): rule["verbs"]
        for document in documents
        if document["kind"] in {"ClusterRole", "Role"}
        for rule in document["rules"]
        if "secrets" in rule["resources"]
    }


def test_secret_read_is_cluster_wide_by_default() -> None:
    documents = render()

    assert secret_rules(documents) == {("ClusterRole", ""): ["get", "list", "watch"]}
    env = {variable["name"] for variable in operator_container()["env"]}
    assert "LBPAIR_SECRET_NAMESPACES" not in env


def test_secret_read_can_be_granted_per_namespace() -> None:
    documents = render("--set", "secretNamespaces={team-a,team-b}")

    assert secret_rules(documents) == {
        ("Role", "team-a"): ["get", "list", "watch"],
        ("Role", "team-b"): ["get", "list", "watch"],
    }
    bindings = {
        document["metadata"]["namespace"]: document["subjects"]
        for document in documents
        if document["kind"] == "RoleBinding" and document["metadata"]["name"] == f"{RELEASE}-secrets"
    }
    service_account = [{"kind": "ServiceAccount", "name": RELEASE, "namespace": "lbpair-system"}]
    assert bindings == {"team-a": service_account, "team-b": service_account}
    env = {
        variable["name"]: variable["value"]
        for variable in operator_container("--set", "secretNamespaces={team-a,team-b}")["env"]
    }
    assert ("LBPAIR_SECRET_NAMESPACES", "team-a,team-b") in env.items()
    assert (
        helm("lint", "--strict", str(CHART), "--set", "secretNamespaces={team-a}", check=False).returncode
        == 0
    )


def test_secret_namespaces_must_be_namespace_names() -> None:
    result = helm("template", RELEASE, str(CHART), "--set", "secretNamespaces={Team_A}", check=False)

    assert result.returncode != 0
    assert "schema" in result.stderr, result.stderr


def environment(*args: str) -> dict[str, str]:
    return {variable["name"]: variable["value"] for variable in operator_container(*args)["env"]}


def test_the_pass_threads_reach_the_operator() -> None:
    default_threads = environment()["LBPAIR_PASS_THREADS"]
    set_threads = environment("--set", "passThreads=200")["LBPAIR_PASS_THREADS"]

    assert (default_threads, set_threads) == ("32", "200")


def test_the_operator_elects_one_active_replica_through_a_lease_in_its_namespace() -> None:
    assert environment()["LBPAIR_LEADER_LEASE"] == f"lbpair-system/{RELEASE}"
    assert environment()["LBPAIR_LEADER_LEASE_SECONDS"] == "15"
    assert deployment("--set", "replicas=3")["spec"]["replicas"] == 3


def test_the_lease_is_the_only_thing_granted_in_the_operators_namespace() -> None:
    documents = render()
    (role,) = of_kind(documents, "Role")
    (binding,) = of_kind(documents, "RoleBinding")

    assert role["metadata"]["namespace"] == "lbpair-system"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [RELEASE],
            "verbs": ["get", "update"],
        },
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": "lbpair-system"}]
    cluster_rules = of_kind(documents, "ClusterRole")[0]["rules"]
    assert not [rule for rule in cluster_rules if "coordination.k8s.io" in rule["apiGroups"]]


def test_more_than_one_replica_needs_the_lease() -> None:
    result = helm(
        "template", RELEASE, str(CHART), "--set", "replicas=2", "--set", "leaderElection.enabled=false",
        check=False,
    )  # fmt: skip

    assert result.returncode != 0
    assert "replicas > 1 needs leaderElection.enabled" in result.stderr


def test_without_the_lease_one_replica_runs_with_no_lease_access() -> None:
    documents = render("--set", "leaderElection.enabled=false")

    assert "LBPAIR_LEADER_LEASE" not in environment("--set", "leaderElection.enabled=false")
    assert not of_kind(documents, "Role")
    assert deployment("--set", "leaderElection.enabled=false")["spec"]["strategy"] == {"type": "Recreate"}
