"""Backend destinations, resolved host names, size limits and hash keys: what a tenant sees on its
object's status when it crosses a boundary of the pair, while the rest of the pair still builds."""

from __future__ import annotations

import threading

import pytest

from lbpair.model import SpecError, parse_upstream
from lbpair.render.model import Header, ObjectKey
from lbpair.resolver import CachingResolver, TransientLookupError, lookup_ipv4
from tests.unit.samples import NAMESPACE, Sample, sample

WWW = ObjectKey("VirtualHost", NAMESPACE, "www")
DEV = ObjectKey("VirtualHost", NAMESPACE, "dev")
LB_WWW = ObjectKey("Upstream", NAMESPACE, "lb-www")


def seed_with_server(address: str) -> Sample:
    resources = sample("seed-tutorial.yaml")
    resources.upstream("lb-www")["spec"]["servers"][1]["address"] = address
    return resources


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.1", "is loopback (127.0.0.0/8)"),
        ("169.254.169.254", "is link-local (169.254.0.0/16)"),
        ("0.0.0.0", "is unspecified (this host on this network) (0.0.0.0/8)"),  # noqa: S104 - the refused one
        ("224.0.0.18", "is multicast (224.0.0.0/4)"),
        ("255.255.255.255", "is broadcast (255.255.255.255/32)"),
        ("203.0.113.11", "is node lb1's address of the pair itself"),
        ("198.51.100.12", "is node lb2's vrrpAddress of the pair itself"),
        ("198.51.100.10", "is a VIP of the pair itself"),
    ],
)
def test_refused_upstream_server_is_left_out_with_its_field_named(address: str, rule: str) -> None:
    result = seed_with_server(address).build()

    assert [str(p) for p in result.problems if p.object == LB_WWW] == [
        f"Upstream demo/lb-www: spec.servers[1].address: {address}, which {rule}"
        + (
            ": refused unless the pair's spec.backends.allowedCIDRs lists a network inside that range"
            if "(" in rule
            else ": refused"
        )
    ]
    assert result.problems_of(WWW) == [
        f"spec.locations[0].upstreamRef.name: Upstream lb-www is not usable: {address}, which {rule}"
        + (
            ": refused unless the pair's spec.backends.allowedCIDRs lists a network inside that range"
            if "(" in rule
            else ": refused"
        )
    ]
    assert LB_WWW not in result.state.included
    assert DEV in result.state.included  # the rest of the pair still builds


def test_allowed_cidrs_inside_a_guarded_range_allow_it_and_narrow_everything_else() -> None:
    resources = seed_with_server("127.0.0.1")
    resources.pair["spec"]["backends"] = {"allowedCIDRs": ["127.0.0.0/8"]}

    result = resources.build()

    assert [str(p) for p in result.problems if p.object.kind == "Upstream"] == [
        "Upstream demo/lb-oa: spec.servers[0].address: 198.18.0.11, which is outside the pair's "
        "spec.backends.allowedCIDRs",
        "Upstream demo/lb-oa: spec.servers[1].address: 198.18.0.12, which is outside the pair's "
        "spec.backends.allowedCIDRs",
        "Upstream demo/lb-www: spec.servers[0].address: 198.18.0.11, which is outside the pair's "
        "spec.backends.allowedCIDRs",
    ]
    assert [str(p) for p in result.problems if p.object == DEV] == [
        "VirtualHost demo/dev: spec.locations[0].url: 198.18.0.11, which is outside the pair's "
        "spec.backends.allowedCIDRs",
        "VirtualHost demo/dev: spec.locations[1].url: 198.18.0.11, which is outside the pair's "
        "spec.backends.allowedCIDRs",
    ]


def test_a_wide_allowed_cidr_does_not_open_a_guarded_range_inside_it() -> None:
    resources = seed_with_server("169.254.169.254")
    resources.pair["spec"]["backends"] = {"allowedCIDRs": ["169.0.0.0/8", "198.18.0.0/24"]}

    result = resources.build()

    assert [p.field for p in result.problems] == [
        "spec.servers[1].address",
        "spec.locations[0].upstreamRef.name",
    ]
    assert "is link-local" in result.problems[0].message


def test_pair_addresses_stay_refused_whatever_the_allow_list() -> None:
    resources = seed_with_server("198.51.100.10")
    resources.pair["spec"]["backends"] = {"allowedCIDRs": ["198.51.100.0/24", "198.18.0.0/24"]}

    result = resources.build()

    assert str(result.problems[0]) == (
        "Upstream demo/lb-www: spec.servers[1].address: 198.51.100.10, which is a VIP of the pair itself: "
        "refused"
    )


def test_upstream_host_name_renders_one_server_per_address_with_its_settings() -> None:
    resources = seed_with_server("app.example.com")
    resources.dns = {"app.example.com": ["198.18.0.21", "198.18.0.22"]}

    result = resources.build()

    assert result.problems == []
    (lb_www,) = [u for u in result.state.upstreams if u.source == LB_WWW]
    assert [(s.address, s.port, s.max_fails, s.fail_timeout, s.resolved_from) for s in lb_www.servers] == [
        ("198.18.0.11", 80, 3, "30s", None),
        ("198.18.0.21", 80, 3, "30s", "app.example.com"),
        ("198.18.0.22", 80, 3, "30s", "app.example.com"),
    ]


def test_upstream_host_name_that_does_not_resolve_refuses_that_upstream_only() -> None:
    result = seed_with_server("gone.example.invalid").build()

    assert [str(p) for p in result.problems if p.object == LB_WWW] == [
        "Upstream demo/lb-www: spec.servers[1].address: gone.example.invalid does not resolve "
        "(to an IPv4 address)"
    ]
    assert LB_WWW not in result.state.included
    assert ObjectKey("Upstream", NAMESPACE, "lb-oa") in result.state.included


def test_host_name_resolving_to_a_refused_address_says_so() -> None:
    resources = seed_with_server("sneaky.example.com")
    resources.dns = {"sneaky.example.com": ["198.18.0.21", "127.0.0.1"]}

    result = resources.build()

    assert result.problems[0].message.startswith(
        "sneaky.example.com resolves to 127.0.0.1, which is loopback"
    )


def test_node_address_given_as_a_name_is_refused_by_what_it_resolves_to() -> None:
    resources = seed_with_server("198.18.0.99")
    resources.pair["spec"]["nodes"][0]["address"] = "lb1.mgmt.example.com"
    resources.dns = {"lb1.mgmt.example.com": ["198.18.0.99"]}

    result = resources.build()

    assert (
        result.problems[0].message == "198.18.0.99, which is node lb1's address of the pair itself: refused"
    )


def dev_with_url(url: str, dns: dict[str, list[str]]) -> Sample:
    resources = sample("seed-tutorial.yaml")
    resources.dns = dns
    dev = resources.vhost("dev")["spec"]
    dev["locations"][0]["url"] = url
    return resources


def test_url_location_to_a_refused_address_names_the_url() -> None:
    result = dev_with_url("http://169.254.169.254/latest/", {}).build()

    assert result.problems_of(DEV) == [
        "spec.locations[0].url: 169.254.169.254, which is link-local (169.254.0.0/16): refused unless the "
        "pair's spec.backends.allowedCIDRs lists a network inside that range"
    ]
    assert DEV not in result.state.included


def test_url_location_to_a_name_proxies_to_its_addresses_and_sends_the_name() -> None:
    resources = dev_with_url("https://svn.example.com:8443/svn/", {"svn.example.com": ["198.18.0.31"]})
    dev = resources.vhost("dev")["spec"]
    dev["proxy"]["headers"] = [
        {"name": "X-Backend", "variable": "proxy_host"},
        {"name": "X-Real-IP", "variable": "remote_addr"},
    ]
    del dev["proxy"]["redirect"]

    result = resources.build()

    (host,) = [h for h in result.state.virtual_hosts if h.source == DEV]
    location = host.locations[0]
    assert location.url == "https://url_demo_dev_0/svn/"
    assert location.url_upstream is not None
    assert location.url_upstream.servers == ["198.18.0.31:8443"]
    assert location.headers == [
        Header(name="Host", value="svn.example.com:8443"),
        Header(name="X-Backend", value="svn.example.com:8443"),
        Header(name="X-Real-IP", variable="remote_addr"),
    ]
    assert location.redirect_rewrite is not None
    assert (location.redirect_rewrite.backend, location.redirect_rewrite.replacement) == (
        "https://svn.example.com:8443/svn/",
        "/svn",
    )
    assert host.locations[1].url == "http://198.18.0.11/submin/"  # an address stays as written
    assert host.locations[1].url_upstream is None


def test_url_location_keeps_the_users_host_header_and_redirect_off() -> None:
    result = dev_with_url("http://svn.example.com", {"svn.example.com": ["198.18.0.31"]}).build()

    (host,) = [h for h in result.state.virtual_hosts if h.source == DEV]
    location = host.locations[0]
    assert location.url == "http://url_demo_dev_0"
    assert [h for h in location.headers if h.name == "Host"] == [Header(name="Host", variable="host")]
    assert location.redirect == "off"
    assert location.redirect_rewrite is None


def test_url_location_to_a_name_that_does_not_resolve_is_refused() -> None:
    result = dev_with_url("http://svn.example.invalid/svn/", {}).build()

    assert result.problems_of(DEV) == [
        "spec.locations[0].url: svn.example.invalid does not resolve (to an IPv4 address)"
    ]


def test_sizes_above_the_pairs_limits_are_refused_naming_field_and_limit() -> None:
    resources = sample("seed-tutorial.yaml")
    dev = resources.vhost("dev")["spec"]
    dev["proxy"]["maxTempFileSize"] = "2048m"
    dev["locations"][1]["proxy"] = {"buffers": {"number": 32, "size": "256k"}, "busyBuffersSize": "5m"}

    result = resources.build()

    assert result.problems_of(DEV) == [
        "spec.locations[1].proxy.buffers: 32 x 256k is above the pair's spec.limits.maxBuffersTotal, 4m",
        "spec.locations[1].proxy.busyBuffersSize: 5m is above the pair's spec.limits.maxBuffersTotal, 4m",
        "spec.proxy.maxTempFileSize: 2048m is above the pair's spec.limits.maxTempFileSize, 1024m",
    ]
    assert DEV not in result.state.included


def test_a_pair_may_raise_its_limits() -> None:
    resources = sample("seed-tutorial.yaml")
    resources.pair["spec"]["limits"] = {"maxBufferSize": "2m", "maxBuffersTotal": "64m"}
    resources.vhost("dev")["spec"]["locations"][1]["proxy"] = {
        "bufferSize": "2m",
        "buffers": {"number": 16, "size": "2m"},
        "busyBuffersSize": "4m",
        "tempFileWriteSize": "4m",
    }

    assert resources.build().problems == []


def test_nginx_buffer_rules_are_checked_on_what_a_location_inherits() -> None:
    resources = sample("seed-tutorial.yaml")
    # dev's defaults have 4 x 256k buffers; a location's 2 x 1k leaves busy 256k > 1 x 1k.
    resources.vhost("dev")["spec"]["locations"][1]["proxy"] = {"buffers": {"number": 2, "size": "1k"}}

    result = resources.build()

    assert result.problems_of(DEV) == [
        "spec: spec.locations[1].proxy.busyBuffersSize: 256k must be at most the size of all buffers minus "
        "one buffer, 1 x 1k = 1k (nginx -t would refuse it)"
    ]


@pytest.mark.parametrize(
    "variable", ["request_uri", "binary_remote_addr", "cookie_session", "arg_user_id", "http_x_tenant"]
)
def test_hash_key_variables_from_the_closed_list_are_accepted(variable: str) -> None:
    upstream = sample("active-active.yaml").upstreams[1]
    upstream["spec"]["hashKey"]["variable"] = variable

    assert parse_upstream(upstream).spec.hash_key is not None


@pytest.mark.parametrize(
    "variable", ["request_body", "no_such_variable", "cookie_", "http_x-tenant", "arg__x", "upstream_addr"]
)
def test_other_hash_key_variables_are_refused_naming_the_field(variable: str) -> None:
    upstream = sample("active-active.yaml").upstreams[1]
    upstream["spec"]["hashKey"]["variable"] = variable

    with pytest.raises(SpecError) as refused:
        parse_upstream(upstream)

    assert refused.value.problems[0].startswith("spec.hashKey.variable: String should match pattern")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_resolver_caches_answers_for_the_ttl() -> None:
    answers = {"app.example.com": ("198.18.0.21",)}
    asked: list[str] = []

    def lookup(name: str) -> tuple[str, ...]:
        asked.append(name)
        return answers.get(name, ())

    clock = FakeClock()
    resolver = CachingResolver(lookup, ttl_seconds=30, clock=clock)
    try:
        assert resolver("app.example.com") == ("198.18.0.21",)
        answers["app.example.com"] = ("198.18.0.22",)
        clock.now = 29
        assert resolver("app.example.com") == ("198.18.0.21",)
        clock.now = 30
        assert resolver("app.example.com") == ("198.18.0.22",)
        assert resolver("gone.example.invalid") == ()
        assert resolver("gone.example.invalid") == ()
    finally:
        resolver.close()

    assert asked == ["app.example.com", "app.example.com", "gone.example.invalid"]


def test_resolver_gives_up_on_a_lookup_that_hangs() -> None:
    release = threading.Event()

    def hanging_lookup(_name: str) -> tuple[str, ...]:
        release.wait(timeout=30)
        return ("198.18.0.21",)

    resolver = CachingResolver(hanging_lookup, timeout_seconds=0.1)
    try:
        assert resolver("slow.example.com") == ()
    finally:
        release.set()
        resolver.close()


def test_resolver_keeps_the_last_good_answer_while_dns_fails_and_looks_up_once_at_a_time() -> None:
    failing = threading.Event()
    release = threading.Event()
    asked: list[str] = []

    def lookup(name: str) -> tuple[str, ...]:
        asked.append(name)
        if failing.is_set():
            release.wait(timeout=30)  # a DNS server that does not answer
            raise TransientLookupError("Temporary failure in name resolution")
        return ("198.18.0.21",)

    clock = FakeClock()
    resolver = CachingResolver(lookup, ttl_seconds=30, timeout_seconds=0.1, clock=clock)
    try:
        assert resolver("app.example.com") == ("198.18.0.21",)
        failing.set()
        clock.now = 31  # expired: looked up again, and DNS does not answer
        answers = [resolver("app.example.com") for _ in range(3)]
    finally:
        release.set()
        resolver.close()

    assert answers == [("198.18.0.21",)] * 3  # the tenant's backend stays in the config
    assert asked == ["app.example.com", "app.example.com"]  # one lookup in flight, not one per pass


def test_real_lookup_reads_ipv4_addresses() -> None:
    assert lookup_ipv4("localhost") == ("127.0.0.1",)
    assert lookup_ipv4("x.invalid") == ()
