"""Secrets on a need-to-know basis: only labelled Secrets are held, only from the referring object's own
namespace, of the right type, holding what they must, and only the keys a build asks for."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lbpair.kube import ListedSecret, SecretStore, SecretWatch
from lbpair.model.common import ObjectRef
from lbpair.model.secret import TLS_SECRET_TYPE, HeldSecret
from tests.unit.samples import NAMESPACE, TLS_INPUTS, Sample, held_secret, sample, secret_data, tls_secret

SHOP_TLS = ObjectRef(NAMESPACE, "shop-tls")
LABELLED = {"lb.lbpair.dev/usable": "true"}
CERTIFICATE = (TLS_INPUTS / "shop-tls.crt").read_text()
PRIVATE_KEY = (TLS_INPUTS / "shop-tls.key").read_text()


def tls_sample() -> Sample:
    return sample("seed-tutorial.yaml", "tls-virtualhost.yaml")


def shop_problems(resources: Sample) -> list[str]:
    """The shop VirtualHost's problems; the seed sample's three hosts build whatever they are."""
    result = resources.build()
    assert {"dev", "oa", "www"} <= {host.source.name for host in result.state.virtual_hosts}
    return [f"{p.field}: {p.message}" for p in result.problems if p.object.name == "shop"]


def new_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_tls_key_file_lands_0600_and_the_certificate_0644() -> None:
    files = {
        tls_file.path.rsplit("/", 1)[1]: tls_file.mode for tls_file in tls_sample().build().state.tls_files
    }

    assert files == {"demo_shop-tls.crt": 0o644, "demo_shop-tls.key": 0o600}


def test_a_missing_or_unlabelled_tls_secret_is_reported_on_the_field() -> None:
    resources = tls_sample()
    del resources.secrets[SHOP_TLS]  # the store holds no Secret without the label

    assert shop_problems(resources) == [
        "spec.tls.secretName: Secret shop-tls not found in namespace demo or not labelled "
        "lb.lbpair.dev/usable=true"
    ]


def test_a_tls_secret_of_another_namespace_is_not_usable() -> None:
    resources = tls_sample()
    resources.pair["spec"]["allowedNamespaces"] = {"from": "All"}
    shop = resources.vhost("shop")
    shop["metadata"]["namespace"] = "team-a"
    shop["spec"]["pairRef"]["namespace"] = NAMESPACE
    shop["spec"]["locations"] = [{"path": "/", "url": "http://198.51.100.80"}]

    result = resources.build()

    assert [(p.object.namespace, p.field, p.message) for p in result.problems] == [
        (
            "team-a",
            "spec.tls.secretName",
            "Secret shop-tls not found in namespace team-a or not labelled lb.lbpair.dev/usable=true",
        )
    ]
    assert ObjectRef("team-a", "shop-tls") in result.secrets_used


def test_a_tls_secret_of_the_wrong_type_is_refused_naming_the_type() -> None:
    resources = tls_sample()
    resources.secrets[SHOP_TLS] = held_secret(secret_data(tls_crt=CERTIFICATE, tls_key=PRIVATE_KEY))

    assert shop_problems(resources) == [
        f"spec.tls.secretName: Secret shop-tls is of type Opaque, not {TLS_SECRET_TYPE}"
    ]


def test_tls_crt_may_hold_certificates_only() -> None:
    resources = tls_sample()
    resources.secrets[SHOP_TLS] = tls_secret(CERTIFICATE + PRIVATE_KEY, PRIVATE_KEY)

    assert shop_problems(resources) == [
        "spec.tls.secretName: Secret shop-tls: tls.crt must hold PEM CERTIFICATE blocks only"
    ]


def test_a_chain_of_certificates_is_accepted() -> None:
    resources = tls_sample()
    resources.secrets[SHOP_TLS] = tls_secret(CERTIFICATE + "\n" + CERTIFICATE, PRIVATE_KEY)

    assert shop_problems(resources) == []


def test_a_key_that_does_not_match_the_certificate_is_refused() -> None:
    """nginx -t would refuse the whole pair's config over it."""
    resources = tls_sample()
    resources.secrets[SHOP_TLS] = tls_secret(CERTIFICATE, new_key_pem())

    assert shop_problems(resources) == [
        "spec.tls.secretName: Secret shop-tls: tls.key does not match the first certificate of tls.crt"
    ]


def test_a_pem_shaped_certificate_that_does_not_parse_is_refused() -> None:
    resources = tls_sample()
    garbage = "-----BEGIN CERTIFICATE-----\nTUlJQg==\n-----END CERTIFICATE-----\n"
    resources.secrets[SHOP_TLS] = tls_secret(garbage, PRIVATE_KEY)

    assert shop_problems(resources) == [
        "spec.tls.secretName: Secret shop-tls: tls.crt does not hold valid X.509 certificates"
    ]


def test_the_vrrp_password_is_read_only_from_the_pairs_namespace() -> None:
    resources = sample("seed-tutorial.yaml")
    password = resources.secrets.pop(ObjectRef(NAMESPACE, "seed-vrrp-auth"))
    resources.secrets[ObjectRef("team-a", "seed-vrrp-auth")] = password

    rejected = resources.rejected()

    assert rejected.message == (
        "LoadBalancerPair demo/seed: spec.vrrp.authentication.secretRef: Secret seed-vrrp-auth not found "
        "in namespace demo or not labelled lb.lbpair.dev/usable=true"
    )


def test_a_missing_key_is_named() -> None:
    resources = sample("seed-tutorial.yaml")
    resources.secrets[ObjectRef(NAMESPACE, "lb-ssh")] = held_secret(secret_data(other="x"))

    assert resources.rejected().message == (
        "LoadBalancerPair demo/seed: spec.ssh.privateKeySecretRef: Secret lb-ssh has no key ssh-privatekey"
    )


# The store: what the operator keeps in memory of the labelled Secrets it lists and watches.


def listed(version: str, **values: str) -> ListedSecret:
    return ListedSecret(SHOP_TLS, TLS_SECRET_TYPE, secret_data(**values), version)


class FakeApi:
    """What a fresh GET of the Secret returns."""

    def __init__(self, secret: ListedSecret | None) -> None:
        self.secret = secret

    def fetch(self, reference: ObjectRef) -> ListedSecret | None:
        return self.secret if self.secret and self.secret.reference == reference else None


def test_the_store_holds_only_the_keys_a_build_asked_for() -> None:
    api = FakeApi(listed("1", tls_crt="crt", tls_key="key", ca_key="the CA's key"))
    store = SecretStore(api.fetch)
    store.put(api.secret)  # type: ignore[arg-type]

    before = store.lookup(SHOP_TLS, "other")  # no such key: nothing is read
    store.lookup(SHOP_TLS, "tls.crt")
    after_crt = store.lookup(SHOP_TLS, "tls.key")
    api.secret = listed("2", tls_crt="crt2", tls_key="key2", ca_key="the CA's new key")
    store.put(api.secret)  # the watch brings a new version
    after_update = store.lookup(SHOP_TLS, "tls.crt")

    assert before == HeldSecret(TLS_SECRET_TYPE, frozenset({"tls.crt", "tls.key", "ca.key"}), {})
    assert after_crt is not None
    assert set(after_crt.data) == {"tls.crt", "tls.key"}
    assert after_update is not None
    assert after_update.data == secret_data(tls_crt="crt2", tls_key="key2")


def test_the_store_forgets_a_secret_that_is_gone_or_unlabelled_and_reports_what_changed() -> None:
    store = SecretStore(FakeApi(None).fetch)
    other = ListedSecret(ObjectRef("team-a", "x"), "Opaque", {}, "5")
    store.replace(None, [listed("1", tls_crt="crt"), other])

    unchanged = store.replace(None, [listed("1", tls_crt="crt"), other])
    relisted = store.replace(NAMESPACE, [])  # a relist of one namespace leaves the others alone

    assert unchanged == set()
    assert relisted == {SHOP_TLS}
    assert store.lookup(SHOP_TLS, "tls.crt") is None
    assert store.lookup(ObjectRef("team-a", "x"), "y") is not None


def test_a_newer_watch_event_wins_over_a_slower_read() -> None:
    def fetch_while_the_watch_moves_on(_: ObjectRef) -> ListedSecret:
        store.put(listed("2", tls_crt="new"))  # lands while the read is on its way
        return listed("1", tls_crt="old")

    store = SecretStore(fetch_while_the_watch_moves_on)
    store.put(listed("1", tls_crt="old"))
    held = store.lookup(SHOP_TLS, "tls.crt")

    assert held is not None
    assert held.data == secret_data(tls_crt="new")


# The watch: a scripted API server behind the kubernetes client's own watch helper.


def secret_body(name: str, version: str, **values: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": version},
        "type": TLS_SECRET_TYPE,
        "data": secret_data(**values),
    }


class ScriptedResponse:
    """An HTTP response as urllib3 gives it to the client (a list body, or a watch stream of events)."""

    status = 200

    def __init__(
        self, body: dict[str, Any] | None = None, events: list[dict[str, Any]] | None = None
    ) -> None:
        self.data = json.dumps(body).encode()
        self._lines = [json.dumps(event).encode() + b"\n" for event in events or []]

    def stream(self, amt: object = None, decode_content: object = None) -> Iterator[bytes]:
        yield from self._lines

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class ScriptedApiServer:
    """Answers list and watch requests from a script; stops the watcher when the script runs out."""

    def __init__(self, lists: list[dict[str, Any]], watches: list[list[dict[str, Any]]]) -> None:
        self.lists, self.watches = lists, watches
        self.watcher: SecretWatch | None = None

    def list_secret_for_all_namespaces(self, **kwargs: Any) -> ScriptedResponse:
        assert kwargs["label_selector"] == "lb.lbpair.dev/usable=true"
        if not kwargs.get("watch"):
            return ScriptedResponse(body=self.lists.pop(0))
        if not self.watches:
            assert self.watcher is not None
            self.watcher.stop()
            return ScriptedResponse(events=[])
        return ScriptedResponse(events=self.watches.pop(0))

    def read_namespaced_secret(self, name: str, namespace: str, **_: Any) -> ScriptedResponse:
        current = secret_body(name, "10", tls_crt="a1")  # what a GET returns before the watch moves on
        return ScriptedResponse(body={**current, "metadata": {**current["metadata"], "labels": LABELLED}})


@pytest.mark.timeout(30)  # a script that ran out too early would leave the loop retrying
def test_the_watch_follows_changes_and_lists_again_when_its_version_expires() -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "old"}}
    api = ScriptedApiServer(
        lists=[
            {"metadata": {"resourceVersion": "10"}, "items": [secret_body("a", "10", tls_crt="a1")]},
            # After the 410: "a" changed and "b" appeared while nobody was watching.
            {
                "metadata": {"resourceVersion": "20"},
                "items": [secret_body("a", "19", tls_crt="a3"), secret_body("b", "20", tls_crt="b1")],
            },
        ],
        watches=[[{"type": "MODIFIED", "object": secret_body("a", "11", tls_crt="a2")}, gone]],
    )
    changed: list[str] = []
    watcher = SecretWatch([], lambda reference: changed.append(reference.name), core=api)
    api.watcher = watcher
    watcher.sync()
    first = watcher.store.lookup(ObjectRef(NAMESPACE, "a"), "tls.crt")  # a build asks for the key

    watcher._follow(None)  # the watch thread's loop, run here until the script ends

    last = watcher.store.lookup(ObjectRef(NAMESPACE, "a"), "tls.crt")
    assert first is not None
    assert first.data == secret_data(tls_crt="a1")
    assert last is not None
    assert last.data == secret_data(tls_crt="a3")
    assert watcher.store.lookup(ObjectRef(NAMESPACE, "b"), "tls.crt") is not None
    assert sorted(changed) == ["a", "a", "a", "b"]  # listed, modified, listed again (changed); b appeared
