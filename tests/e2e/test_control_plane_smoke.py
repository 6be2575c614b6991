"""The control plane is real: CRDs, custom resources, RBAC and ServiceAccount tokens all work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.cluster import ControlPlane, pinned_versions

pytestmark = pytest.mark.e2e

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.lbpair.dev}
spec:
  group: smoke.lbpair.dev
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer, minimum: 1}
"""

READ_WIDGETS_ROLE = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: widget-reader, namespace: smoke}
rules:
  - apiGroups: [smoke.lbpair.dev]
    resources: [widgets]
    verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: widget-reader, namespace: smoke}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: widget-reader}
subjects: [{kind: ServiceAccount, name: reader, namespace: smoke}]
"""


def test_custom_resource_round_trip_and_schema_validation(cluster: ControlPlane) -> None:
    cluster.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.smoke.lbpair.dev", "--timeout=30s")
    cluster.kubectl("create", "namespace", "smoke", check=False)

    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input="{apiVersion: smoke.lbpair.dev/v1, kind: Widget, "
        "metadata: {name: w1, namespace: smoke}, spec: {size: 3}}",
    )
    read_back = json.loads(cluster.kubectl("-n", "smoke", "get", "widget", "w1", "-o", "json").stdout)
    rejected = cluster.kubectl(
        "apply",
        "-f",
        "-",
        check=False,
        input="{apiVersion: smoke.lbpair.dev/v1, kind: Widget, "
        "metadata: {name: w2, namespace: smoke}, spec: {size: 0}}",
    )

    assert read_back["spec"] == {"size": 3}
    assert rejected.returncode != 0
    assert "spec.size" in rejected.stderr


def test_restricted_service_account_gets_only_what_its_role_allows(cluster: ControlPlane) -> None:
    cluster.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.smoke.lbpair.dev", "--timeout=30s")
    reader = cluster.service_account_kubeconfig("smoke", "reader")
    cluster.kubectl("apply", "-f", "-", input=READ_WIDGETS_ROLE)

    listed = cluster.kubectl("-n", "smoke", "get", "widgets", kubeconfig=reader, check=False)
    deleting = cluster.kubectl("-n", "smoke", "delete", "widget", "w1", kubeconfig=reader, check=False)
    secrets = cluster.kubectl("-n", "smoke", "get", "secrets", kubeconfig=reader, check=False)
    who = cluster.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=reader)

    assert listed.returncode == 0, listed.stderr
    assert deleting.returncode != 0
    assert "forbidden" in deleting.stderr.lower()
    assert secrets.returncode != 0
    assert "forbidden" in secrets.stderr.lower()
    assert who.stdout == "system:serviceaccount:smoke:reader"


def test_server_and_client_report_the_pinned_version(cluster: ControlPlane) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)

    pinned = pinned_versions()["KUBERNETES_VERSION"]
    assert version["serverVersion"]["gitVersion"] == pinned
    assert version["clientVersion"]["gitVersion"] == pinned


def test_helm_installs_a_chart_into_the_control_plane(cluster: ControlPlane, tmp_path: Path) -> None:
    chart = tmp_path / "smoke"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: smoke\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: smoke-{{ .Release.Name }}}\n"
        "data: {greeting: {{ .Values.greeting | quote }}}\n"
    )
    (chart / "values.yaml").write_text("greeting: hello\n")

    cluster.helm("install", "one", str(chart), "--namespace", "default", "--set", "greeting=hi", "--wait")
    installed = cluster.kubectl("get", "configmap", "smoke-one", "-o", "jsonpath={.data.greeting}")
    releases = json.loads(cluster.helm("list", "--namespace", "default", "-o", "json").stdout)

    assert installed.stdout == "hi"
    assert [(release["name"], release["status"]) for release in releases] == [("one", "deployed")]
