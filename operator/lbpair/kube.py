"""The only module that imports the kubernetes client: reading Secrets and patching status.

kopf watches and handles the resources; this covers what its handlers cannot do on their own: read a
referenced Secret on demand, and write status from the per-pair loop (a kopf daemon has no `patch`).
Calls block; the reconcile layer runs them in worker threads.
"""

from __future__ import annotations

import base64
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from lbpair.model import GROUP, VERSION

HTTP_NOT_FOUND = 404


class SecretNotFoundError(LookupError):
    """A referenced Secret, or a key in it, does not exist."""


def load_client_config() -> None:
    """In a pod: the ServiceAccount; elsewhere: $KUBECONFIG or ~/.kube/config, as kubectl does."""
    # The kubernetes client leaves its config loaders unannotated.
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


class KubeAPI:
    def __init__(self) -> None:
        self._core = client.CoreV1Api()
        self._custom = client.CustomObjectsApi()

    def read_secret_key(self, namespace: str, name: str, key: str) -> bytes:
        try:
            secret = self._core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == HTTP_NOT_FOUND:
                raise SecretNotFoundError(f"Secret {namespace}/{name} not found") from error
            raise
        data = secret.data or {}
        if key not in data:
            raise SecretNotFoundError(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data[key])

    def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch `.status` (lists such as conditions are replaced whole)."""
        try:
            self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, {"status": status}
            )
        except ApiException as error:
            if error.status != HTTP_NOT_FOUND:  # deleted meanwhile: nothing to report on
                raise
