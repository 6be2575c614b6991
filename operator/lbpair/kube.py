"""The only module that imports the kubernetes client: status patches.

kopf watches and handles the resources; this covers what its handlers cannot do on their own: write
status from the per-pair loop (a kopf daemon has no `patch`). Calls block; the reconcile layer runs them
in worker threads.
"""

from __future__ import annotations

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from lbpair.model import GROUP, VERSION
from lbpair.model.status import StatusModel

HTTP_NOT_FOUND = 404


def load_client_config() -> None:
    """In a pod: the ServiceAccount; elsewhere: $KUBECONFIG or ~/.kube/config, as kubectl does."""
    # The kubernetes client leaves its config loaders unannotated.
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


class KubeAPI:
    """The production StatusSink."""

    def __init__(self) -> None:
        self._custom = client.CustomObjectsApi()

    def patch_status(self, plural: str, namespace: str, name: str, status: StatusModel) -> None:
        """Merge-patch `.status` (lists such as conditions are replaced whole)."""
        body = {"status": status.model_dump(by_alias=True, exclude_none=True, mode="json")}
        try:
            self._custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, plural, name, body)
        except ApiException as error:
            if error.status != HTTP_NOT_FOUND:  # deleted meanwhile: nothing to report on
                raise
