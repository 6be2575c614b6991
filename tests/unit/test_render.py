"""Rendering is pure and deterministic, and the hashes say what changed."""

from __future__ import annotations

import random

from lbpair.render import RenderMemo, render_pair
from tests.unit.samples import sample

CASE = ("seed-tutorial.yaml", "tls-virtualhost.yaml")


def test_input_order_does_not_change_the_output() -> None:
    resources = sample(*CASE)
    first = render_pair(resources.build().state)
    random.Random(7).shuffle(resources.upstreams)  # noqa: S311 - a fixed shuffle, not security
    random.Random(7).shuffle(resources.virtual_hosts)  # noqa: S311 - as above

    second = render_pair(resources.build().state)

    assert first == second


def test_nginx_files_are_identical_on_both_nodes_and_keepalived_differs() -> None:
    lb1, lb2 = render_pair(sample(*CASE).build().state).values()

    nginx_paths = [path for path in lb1.files if path.startswith("/etc/nginx/")]
    assert nginx_paths
    assert all(lb1.files[path] == lb2.files[path] for path in nginx_paths)
    assert lb1.nginx_hash == lb2.nginx_hash
    assert lb1.files["/etc/keepalived/keepalived.conf"] != lb2.files["/etc/keepalived/keepalived.conf"]
    assert lb1.config_hash != lb2.config_hash


def test_status_server_serves_the_hash_of_the_other_nginx_files() -> None:
    lb1 = render_pair(sample(*CASE).build().state)["lb1"]

    assert f'return 200 "{lb1.nginx_hash}\\n";' in lb1.files["/etc/nginx/lbpair/status.conf"].content


def test_a_changed_backend_changes_only_its_file_and_the_hashes() -> None:
    resources = sample(*CASE)
    before = render_pair(resources.build().state)["lb1"]
    resources.upstream("lb-www")["spec"]["servers"][0]["weight"] = 5

    after = render_pair(resources.build().state)["lb1"]

    changed_paths = {path for path in before.files if before.files[path] != after.files[path]}
    assert changed_paths == {"/etc/nginx/lbpair/upstream_demo_lb-www.conf", "/etc/nginx/lbpair/status.conf"}
    assert before.nginx_hash != after.nginx_hash


def test_tls_key_is_private_and_the_check_script_executable() -> None:
    lb1 = render_pair(sample(*CASE).build().state)["lb1"]

    modes = {path: file.mode for path, file in lb1.files.items()}
    assert modes["/etc/nginx/lbpair/tls/demo_shop-tls.key"] == 0o600
    assert modes["/etc/nginx/lbpair/tls/demo_shop-tls.crt"] == 0o644
    assert modes["/etc/keepalived/lbpair-check-nginx.sh"] == 0o755
    assert lb1.files["/etc/keepalived/lbpair-check-nginx.sh"].content.startswith("#!/bin/sh\n")


def test_a_render_through_the_pairs_memo_equals_a_render_from_scratch() -> None:
    resources = sample(*CASE)
    memo = RenderMemo()
    render_pair(resources.build().state, memo)
    resources.upstream("lb-www")["spec"]["servers"][0]["weight"] = 5
    resources.vhost("www")["spec"]["serverNames"].append("www2.example.com")
    resources.virtual_hosts.remove(resources.vhost("dev"))
    state = resources.build().state

    assert render_pair(state, memo) == render_pair(state)
