"""Which attached objects a validator's refusal blames: by the files it names, else by bisecting."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from lbpair.isolation import Refuses, bisect, blame, node_at_fault, told_to
from lbpair.render.model import ObjectKey

SHOP = ObjectKey("VirtualHost", "team-a", "shop")
POOL = ObjectKey("Upstream", "team-b", "pool")
CART = ObjectKey("VirtualHost", "team-a", "cart")
SOURCES = {
    "/etc/nginx/lbpair/vhost_team-a_shop.conf": [SHOP],
    "/etc/nginx/lbpair/tls/team-a_shop-tls.key": [CART, SHOP],  # one Secret, two VirtualHosts
    "/etc/nginx/lbpair/upstream_team-b_pool.conf": [POOL],
}
VERDICT = "nginx: configuration file /etc/nginx/nginx.conf test failed"


def test_the_objects_whose_file_nginx_names_are_blamed_with_its_lines_only() -> None:
    output = (
        'nginx: [emerg] SSL_CTX_use_PrivateKey("/etc/nginx/lbpair/tls/team-a_shop-tls.key") failed '
        "(SSL: error:05800074:x509 certificate routines::key values mismatch)\n" + VERDICT
    )

    assert blame(output, SOURCES) == {CART: output.splitlines()[0], SHOP: output.splitlines()[0]}


def test_a_file_with_a_line_number_and_several_objects_in_one_output() -> None:
    output = (
        'nginx: [emerg] host not found in upstream "x.invalid" in '
        "/etc/nginx/lbpair/upstream_team-b_pool.conf:3\n"
        'nginx: [emerg] unknown directive "x" in /etc/nginx/lbpair/vhost_team-a_shop.conf:12\n' + VERDICT
    )

    assert sorted(blame(output, SOURCES)) == [POOL, SHOP]


def test_the_time_and_process_ids_of_a_logged_message_are_dropped() -> None:
    output = (
        "2026/11/30 07:39:05 [emerg] 1282#1282: unknown directive in /etc/nginx/lbpair/vhost_team-a_shop.conf"
    )

    assert blame(output, SOURCES) == {
        SHOP: "[emerg] unknown directive in /etc/nginx/lbpair/vhost_team-a_shop.conf"
    }


def test_a_warning_that_names_a_file_blames_nothing() -> None:
    output = (
        'nginx: [warn] conflicting server name "a" on 0.0.0.0:80, ignored in '
        "/etc/nginx/lbpair/upstream_team-b_pool.conf:1\n"
        'nginx: [emerg] unknown directive "x" in /etc/nginx/lbpair/vhost_team-a_shop.conf:12\n' + VERDICT
    )

    assert list(blame(output, SOURCES)) == [SHOP]


def test_an_operating_system_error_is_the_nodes_fault_not_the_file_it_was_opening() -> None:
    output = (
        'nginx: [emerg] open() "/var/log/nginx/team-a_shop.error.log" failed (24: Too many open files)\n'
        + VERDICT
    )

    assert node_at_fault(output)
    assert not node_at_fault('nginx: [emerg] SSL_CTX_use_certificate("/x.crt") failed (SSL: error:0A00018F)')


@pytest.mark.parametrize(
    "output",
    [
        'nginx: [emerg] "proxy_busy_buffers_size" must be less than the size of all "proxy_buffers" '
        "in /etc/nginx/nginx.conf:40",
        'nginx: [emerg] unknown "foo" variable',
        VERDICT,
    ],
)
def test_nothing_is_blamed_when_no_objects_file_is_named(output: str) -> None:
    assert blame(output, SOURCES) == {}


def validator_refusing(
    *bad: ObjectKey, pair_at_fault: bool = False
) -> tuple[list[Collection[ObjectKey]], Refuses]:
    """A validator over SUSPECTS: refuses while any of `bad` is in (or always, when the pair is at fault)."""
    calls: list[Collection[ObjectKey]] = []

    def refuses(left_out: Collection[ObjectKey]) -> str | None:
        calls.append(left_out)
        included = [key for key in SUSPECTS if key not in left_out]
        culprits = [key for key in bad if key in included]
        if pair_at_fault or culprits:
            return f"nginx: [emerg] refused because of {culprits[0] if culprits else 'the pair'}\n{VERDICT}"
        return None

    return calls, refuses


SUSPECTS = [ObjectKey("VirtualHost", "t", f"site-{index:02d}") for index in range(13)]


@pytest.mark.parametrize("culprit", [0, 6, 12])
def test_bisecting_finds_the_refused_object_in_a_few_validations(culprit: int) -> None:
    calls, refuses = validator_refusing(SUSPECTS[culprit])

    message = f"nginx: [emerg] refused because of {SUSPECTS[culprit]}"

    found = bisect(SUSPECTS, f"{message}\n{VERDICT}", refuses)  # as the whole change was refused

    assert found is not None
    assert (found[0], told_to(found[0], found[1], SOURCES)) == (SUSPECTS[culprit], message)
    assert len(calls) <= 1 + 4  # without all of them, then ceil(log2(13)) halvings


def test_the_object_found_is_not_told_other_objects_files() -> None:
    output = (
        'nginx: [emerg] unknown "foo" variable\n'
        "nginx: [emerg] something in /etc/nginx/lbpair/upstream_team-b_pool.conf:3\n" + VERDICT
    )

    assert told_to(SHOP, output, SOURCES) == 'nginx: [emerg] unknown "foo" variable'


def test_with_two_refused_objects_one_is_found_and_the_other_next_time() -> None:
    _, refuses = validator_refusing(SUSPECTS[3], SUSPECTS[9])

    found = bisect(SUSPECTS, "the first refusal", refuses)

    assert found is not None
    assert found[0] in {SUSPECTS[3], SUSPECTS[9]}


def test_no_tenant_is_blamed_when_the_pair_is_refused_without_any_of_them() -> None:
    calls, refuses = validator_refusing(pair_at_fault=True)

    assert bisect(SUSPECTS, "the first refusal", refuses) is None
    assert calls == [SUSPECTS]  # one validation: without every suspect
