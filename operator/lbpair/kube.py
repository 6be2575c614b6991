"""The only module that imports the kubernetes client: status patches, the Secret store and the leader Lease.

kopf watches and handles the resources; this covers what its handlers cannot do on their own: write
status from the per-pair loop (a kopf daemon has no `patch`), and follow the opt-in Secrets namespace by
namespace (kopf filters by label on the server, but watches every resource in the namespaces it serves,
so it could not honour a Role granted in only some namespaces). Calls block; the reconcile layer runs
them in worker threads.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from pydantic.alias_generators import to_camel

from lbpair.model import GROUP, SECRET_LABEL, SECRET_SELECTOR, VERSION
from lbpair.model.common import ObjectMeta, ObjectRef
from lbpair.model.secret import HeldSecret
from lbpair.model.status import StatusModel

log = logging.getLogger(__name__)

HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409
HTTP_GONE = 410
WATCH_TIMEOUT_SECONDS = 300
REQUEST_TIMEOUT = (5, 10)  # (connect, read) seconds of a list or read; a watch reads for its own time + 15 s
WATCH_RETRY_SECONDS = 1.0
WATCH_MAX_RETRY_SECONDS = 30.0


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
        for cleared in status.CLEARED_WHEN_NONE:  # a merge patch removes a field only when sent as null
            if getattr(status, cleared) is None:
                body["status"][to_camel(cleared)] = None
        try:
            self._custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, plural, name, body)
        except ApiException as error:
            if error.status != HTTP_NOT_FOUND:  # deleted meanwhile: nothing to report on
                raise

    def put_config_map(self, owner: ObjectMeta, name: str, data: Mapping[str, str]) -> None:
        """Create or replace the ConfigMap `name` in the pair's namespace, owned by the pair (garbage
        collected with it); its data is replaced whole."""
        core: Any = client.CoreV1Api()  # the body goes as a dict, as the Lease's do
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": owner.namespace,
                "labels": {"app.kubernetes.io/managed-by": "lbpair-operator", f"{GROUP}/pair": owner.name},
                "ownerReferences": [
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "LoadBalancerPair",
                        "name": owner.name,
                        "uid": owner.uid,
                    }
                ],
            },
            "data": dict(data),
        }
        try:
            core.replace_namespaced_config_map(name, owner.namespace, body)
        except ApiException as error:
            if error.status != HTTP_NOT_FOUND:
                raise
            core.create_namespaced_config_map(owner.namespace, body)


@dataclass(frozen=True)
class ListedSecret:
    """A labelled Secret as the API returned it, before the store drops the values nobody asked for."""

    reference: ObjectRef
    type: str
    data: Mapping[str, str]
    resource_version: str

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> ListedSecret:
        metadata = body.get("metadata") or {}
        return cls(
            ObjectRef(str(metadata.get("namespace")), str(metadata.get("name"))),
            str(body.get("type") or "Opaque"),
            dict(body.get("data") or {}),
            str(metadata.get("resourceVersion") or ""),
        )


SecretFetch = Callable[[ObjectRef], ListedSecret | None]
"""A fresh read of one Secret; None when it is gone or no longer labelled."""


class SecretStore:
    """The Secrets labelled usable, shared by every pass (thread-safe): each one's type and key names, and
    the values of only the keys that builds ask for.

    A key is first asked for by a build (a pair's SSH key or VRRP password, a VirtualHost's tls.crt and
    tls.key); its value is then read once from the API and kept current from the watch. Every other value
    a list or watch brings is dropped on arrival."""

    def __init__(self, fetch: SecretFetch) -> None:
        self._fetch = fetch
        self._lock = threading.Lock()
        self._held: dict[ObjectRef, tuple[str, HeldSecret]] = {}  # (resourceVersion, what is held)
        self._wanted: dict[ObjectRef, set[str]] = {}

    def lookup(self, reference: ObjectRef, key: str) -> HeldSecret | None:
        """The SecretLookup of the builds."""
        with self._lock:
            version, held = self._held.get(reference, ("", None))
            if held is None or key in held.data or key not in held.keys:
                return held
            self._wanted.setdefault(reference, set()).add(key)
        # Outside the lock: a slow API server must not hold up other pairs' lookups.
        fresh = self._fetch(reference)
        with self._lock:
            # A watch event that landed meanwhile already carries the key (it is wanted now): keep it.
            if fresh is not None and self._held.get(reference, ("", None))[0] == version:
                self._hold(fresh)
            return self._held.get(reference, ("", None))[1]

    def put(self, secret: ListedSecret) -> None:
        with self._lock:
            self._hold(secret)

    def remove(self, reference: ObjectRef) -> None:
        with self._lock:
            self._held.pop(reference, None)

    def replace(self, namespace: str | None, secrets: Iterable[ListedSecret]) -> set[ObjectRef]:
        """A fresh list of `namespace` (None: all namespaces) replaces what is held there; returns the
        Secrets that changed, appeared or went away."""
        listed = {secret.reference: secret for secret in secrets}
        with self._lock:
            before = {
                reference: version
                for reference, (version, _) in self._held.items()
                if namespace is None or reference.namespace == namespace
            }
            for reference in before.keys() - listed.keys():
                del self._held[reference]
            for secret in listed.values():
                self._hold(secret)
        after = {reference: secret.resource_version for reference, secret in listed.items()}
        return {
            reference
            for reference in before.keys() | after.keys()
            if before.get(reference) != after.get(reference)
        }

    def _hold(self, secret: ListedSecret) -> None:
        wanted = self._wanted.get(secret.reference, set())
        data = {key: value for key, value in secret.data.items() if key in wanted}
        self._held[secret.reference] = (
            secret.resource_version,
            HeldSecret(secret.type, frozenset(secret.data), data),
        )


class SecretWatch:
    """Lists and watches the Secrets labelled usable, with the label selector applied by the API server
    (the operator never receives another Secret), cluster-wide or in each of `namespaces`, and keeps a
    SecretStore current. One daemon thread per scope; a watch that expires (410 Gone) or fails is resumed
    from a fresh list, failures with backoff. `on_change` gets each Secret that changed, appeared or went
    away (including by losing the label), from the watch threads."""

    def __init__(
        self,
        namespaces: Sequence[str],
        on_change: Callable[[ObjectRef], None],
        core: Any = None,  # noqa: ANN401 - a kubernetes CoreV1Api; a unit test passes a scripted one
    ) -> None:
        self._core = core or client.CoreV1Api()
        self._scopes: list[str | None] = list(namespaces) or [None]
        self._on_change = on_change
        self._stopped = threading.Event()
        self._versions: dict[str | None, str] = {}
        self.store = SecretStore(self._fetch)

    def sync(self) -> None:
        """The first list of every scope, before any pass reads the store (blocks)."""
        for scope in self._scopes:
            self._versions[scope] = self._relist(scope)

    def start(self) -> None:
        for scope in self._scopes:
            name = f"secret-watch-{scope or 'all'}"
            threading.Thread(target=self._follow, args=(scope,), name=name, daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def _list(self, scope: str | None, **kwargs: Any) -> Any:  # noqa: ANN401 - the client's own response types
        if scope is None:
            return self._core.list_secret_for_all_namespaces(label_selector=SECRET_SELECTOR, **kwargs)
        return self._core.list_namespaced_secret(scope, label_selector=SECRET_SELECTOR, **kwargs)

    def _relist(self, scope: str | None) -> str:
        listed = json.loads(self._list(scope, _preload_content=False, _request_timeout=REQUEST_TIMEOUT).data)
        secrets = [ListedSecret.from_api(item) for item in listed.get("items") or []]
        for reference in self.store.replace(scope, secrets):
            self._on_change(reference)
        return str(listed["metadata"]["resourceVersion"])

    def _follow(self, scope: str | None) -> None:
        version: str | None = self._versions[scope]
        delay = WATCH_RETRY_SECONDS
        while not self._stopped.is_set():
            try:
                if version is None:
                    version = self._relist(scope)
                version = self._watch(scope, version)
                delay = WATCH_RETRY_SECONDS
            except Exception as error:  # noqa: BLE001 - API and network errors of any kind: the watch goes on
                version = None  # start over from a list
                if isinstance(error, ApiException) and error.status == HTTP_GONE:  # our version is too old
                    log.info("secret watch scope=%s expired; listing again", scope or "all")
                    continue
                log.warning(
                    "secret watch scope=%s failed: %s; retrying in %g s", scope or "all", error, delay
                )
                self._stopped.wait(delay)
                delay = min(2 * delay, WATCH_MAX_RETRY_SECONDS)

    def _watch(self, scope: str | None, version: str) -> str:
        """Follows one watch request until the server ends it; returns the last resourceVersion seen."""
        # The client's watch helper is unannotated.
        stream = watch.Watch(return_type="V1Secret").stream(  # type: ignore[no-untyped-call]
            self._list,
            scope,
            resource_version=version,
            timeout_seconds=WATCH_TIMEOUT_SECONDS,
            allow_watch_bookmarks=True,
            # A connection that dies silently would otherwise hang the watch, and rotations stop arriving.
            _request_timeout=(REQUEST_TIMEOUT[0], WATCH_TIMEOUT_SECONDS + 15),
        )
        for event in stream:
            body = event["raw_object"]
            version = str(body["metadata"]["resourceVersion"])
            if event["type"] == "BOOKMARK":
                continue
            secret = ListedSecret.from_api(body)
            if event["type"] == "DELETED":  # also when it loses the label
                self.store.remove(secret.reference)
            else:
                self.store.put(secret)
            self._on_change(secret.reference)
            if self._stopped.is_set():
                break
        return version

    def _fetch(self, reference: ObjectRef) -> ListedSecret | None:
        try:
            response = self._core.read_namespaced_secret(
                reference.name, reference.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as error:
            if error.status == HTTP_NOT_FOUND:
                return None
            raise
        body = json.loads(cast("bytes", response.data))  # unparsed: _preload_content=False
        if ((body.get("metadata") or {}).get("labels") or {}).get(SECRET_LABEL) != "true":
            return None
        return ListedSecret.from_api(body)


LEASE_REQUEST_TIMEOUT = (2, 3)  # (connect, read) seconds: a lease call must end well within a renewal


class LeaderLease:
    """A coordination.k8s.io Lease as the lock that lets one operator act, the way client-go's leader
    election uses it: the holder renews it; a candidate takes it over once the record has not changed for
    the lease's duration, measured on the candidate's own clock (no clocks are compared across machines).
    Writes carry the read resourceVersion, so two candidates cannot both win. Blocking calls."""

    def __init__(
        self,
        namespace: str,
        name: str,
        identity: str,
        duration_seconds: float,
        *,
        clock: Callable[[], float],
        api: object = None,
    ) -> None:
        """`api`: client.CoordinationV1Api (the default) or a test's stand-in."""
        self.namespace, self.name, self.identity = namespace, name, identity
        self._duration = duration_seconds
        self._clock = clock
        # Bodies go as dicts: the client's V1Lease would drop MicroTime's zero fraction (see _micro_time).
        self._api: Any = api or client.CoordinationV1Api()
        self._observed: tuple[str, str] | None = None  # (holder, resourceVersion) last seen
        self._observed_at = 0.0
        self.holder = ""
        """Who held the lease at the last attempt ("" when free)."""

    def try_acquire(self) -> bool:
        """One attempt to create, renew or take over the lease; True while this process holds it."""
        lease = self._read()
        if lease is None:
            return self._write(None, transitions=0)
        spec, version = lease.get("spec") or {}, str(lease["metadata"]["resourceVersion"])
        self.holder = str(spec.get("holderIdentity") or "")
        transitions = int(spec.get("leaseTransitions") or 0)
        if self.holder == self.identity:
            return self._write(version, transitions=transitions, acquired=spec.get("acquireTime"))
        if self._observed != (self.holder, version):  # renewed (or changed) since the last look
            self._observed, self._observed_at = (self.holder, version), self._clock()
        duration = float(spec.get("leaseDurationSeconds") or self._duration)
        if self.holder and self._clock() - self._observed_at < duration:
            return False
        log.info("leader lease %s/%s: taking over from %r", self.namespace, self.name, self.holder)
        return self._write(version, transitions=transitions + 1)

    def release(self) -> None:
        """Give the lease up (a clean shutdown), so a standby takes over at its next attempt."""
        try:
            lease = self._read()
            spec = (lease or {}).get("spec") or {}
            if lease is not None and spec.get("holderIdentity") == self.identity:
                body = self._body(
                    str(lease["metadata"]["resourceVersion"]), int(spec.get("leaseTransitions") or 0)
                )
                body["spec"]["holderIdentity"] = None
                self._api.replace_namespaced_lease(
                    self.name, self.namespace, body, _request_timeout=LEASE_REQUEST_TIMEOUT
                )
        except ApiException as error:
            log.warning("leader lease %s/%s: not released: %s", self.namespace, self.name, error.reason)

    def _read(self) -> dict[str, Any] | None:
        try:
            response = self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=LEASE_REQUEST_TIMEOUT, _preload_content=False
            )
        except ApiException as error:
            if error.status == HTTP_NOT_FOUND:
                return None
            raise
        lease: dict[str, Any] = json.loads(response.data)
        return lease

    def _write(self, version: str | None, transitions: int, acquired: str | None = None) -> bool:
        """Create (version None) or replace the lease as held by us; False if another writer won."""
        body = self._body(version, transitions, acquired)
        try:
            if version is None:
                self._api.create_namespaced_lease(
                    self.namespace, body, _request_timeout=LEASE_REQUEST_TIMEOUT
                )
            else:
                self._api.replace_namespaced_lease(
                    self.name, self.namespace, body, _request_timeout=LEASE_REQUEST_TIMEOUT
                )
        except ApiException as error:
            if error.status == HTTP_CONFLICT:  # another candidate wrote first
                return False
            raise
        self.holder = self.identity
        return True

    def _body(self, version: str | None, transitions: int, acquired: str | None = None) -> dict[str, Any]:
        now = datetime.datetime.now(datetime.UTC)
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if version is not None:
            metadata["resourceVersion"] = version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": math.ceil(self._duration),
                "acquireTime": acquired or _micro_time(now),
                "renewTime": _micro_time(now),
                "leaseTransitions": transitions,
            },
        }


def _micro_time(moment: datetime.datetime) -> str:
    """A MicroTime as the API server parses it (always six fraction digits, which isoformat() drops at 0)."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
