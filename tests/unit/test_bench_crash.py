"""The kill storm's reading of a node's state (bench/crash.py): where a push stood, and whether the live
files are one complete set."""

from __future__ import annotations

import hashlib

from bench.crash import IDLE, NodeSnapshot, config_hash
from lbpair.model.files import ManagedFile, manifest_hash

OLD = [
    ManagedFile("/etc/nginx/nginx.conf", "old nginx"),
    ManagedFile("/etc/keepalived/keepalived.conf", "old ka"),
]
NEW = [
    ManagedFile("/etc/nginx/nginx.conf", "new nginx"),
    ManagedFile("/etc/keepalived/keepalived.conf", "old ka"),
]


def manifest(files: list[ManagedFile]) -> str:
    """As the node stores it: the bundle's lines, sorted by path."""
    return "".join(managed.manifest_line for managed in sorted(files, key=lambda managed: managed.path))


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def snapshot_output(
    *,
    live_manifest: list[ManagedFile],
    live: str,
    files: dict[str, str],
    journal: tuple[str, ...] = (),
    txn: list[ManagedFile] | None = None,
    staged: list[ManagedFile] | None = None,
) -> str:
    """What SNAPSHOT_SCRIPT prints for a node in that state."""
    actual = "".join(f"{sha(content)}  {path}\n" for path, content in sorted(files.items()))
    return (
        f"== manifest\n{manifest(live_manifest)}== live\n{live}\n== journal\n"
        + "".join(f"{word}\n" for word in journal)
        + f"== txn-manifest\n{manifest(txn or [])}== stage-manifest\n{manifest(staged or live_manifest)}"
        + f"== actual\n{actual}== services\nnginx active\nkeepalived active\n"
    )


def live_files(files: list[ManagedFile]) -> dict[str, str]:
    return {managed.path: managed.content for managed in files}


def test_the_config_hash_of_a_node_manifest_is_the_operators() -> None:
    assert config_hash(manifest(NEW)) == manifest_hash(NEW)
    assert config_hash("") == ""


def test_a_node_on_the_new_config_verified_live_is_idle_and_complete() -> None:
    node = NodeSnapshot.parse(
        snapshot_output(live_manifest=NEW, live=manifest_hash(NEW), files=live_files(NEW), staged=NEW)
    )

    assert (node.state, node.consistent, node.recovered_hash) == (IDLE, True, manifest_hash(NEW))
    assert node.services == {"nginx": "active", "keepalived": "active"}


def test_a_push_cut_between_stage_and_swap_or_swap_and_mark_live_is_seen() -> None:
    staged = NodeSnapshot.parse(
        snapshot_output(live_manifest=OLD, live=manifest_hash(OLD), files=live_files(OLD), staged=NEW)
    )
    swapped = NodeSnapshot.parse(
        snapshot_output(live_manifest=NEW, live="", files=live_files(NEW), staged=NEW)
    )

    assert (staged.state, staged.consistent, staged.recovered_hash) == (
        "staged, not swapped",
        True,
        manifest_hash(OLD),
    )
    assert (swapped.state, swapped.consistent) == ("swapped, not verified live", True)


def test_a_committed_swap_may_be_half_renamed_but_a_mix_without_a_journal_is_partial() -> None:
    half_renamed = {"/etc/nginx/nginx.conf": "new nginx", "/etc/keepalived/keepalived.conf": "old ka"}
    committed = NodeSnapshot.parse(
        snapshot_output(
            live_manifest=OLD, live="", files=half_renamed, journal=("committed",), txn=NEW, staged=NEW
        )
    )
    mixed = NodeSnapshot.parse(
        snapshot_output(live_manifest=OLD, live=manifest_hash(OLD), files=half_renamed, staged=NEW)
    )
    missing = NodeSnapshot.parse(
        snapshot_output(
            live_manifest=OLD, live=manifest_hash(OLD), files={"/etc/nginx/nginx.conf": "old nginx"}
        )
    )

    assert (committed.state, committed.consistent, committed.recovered_hash) == (
        "swap committed, not finished",
        True,
        manifest_hash(NEW),
    )
    assert not mixed.consistent
    assert not missing.consistent
