"""Certificate expiry and name coverage as a tenant sees them on a TLS VirtualHost: status.certificate,
the CertificateValid and CertificateExpiring conditions and Warning events, with time moved by a fake wall
clock (no edit between passes), and a rotated Secret going to both nodes."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import pytest

from lbpair.build.certificates import covers, inspect_certificate
from lbpair.config import ConfigError, OperatorConfig
from lbpair.events import Event
from lbpair.metrics import PrometheusRecorder
from lbpair.model.common import ObjectRef
from lbpair.model.status import VirtualHostStatus, find_condition
from lbpair.reconcile import Reconciler
from tests.unit.fake_node import FakeNode, FakeNodes
from tests.unit.make_certificates import IssuedCertificate, make_certificate
from tests.unit.samples import NAMESPACE, Sample, sample, tls_secret
from tests.unit.test_reconcile import VIP, FakeClock, RecordingSink

START = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
SHOP_TLS = ObjectRef(NAMESPACE, "shop-tls")
CERTIFICATE_FILE = "/etc/nginx/lbpair/tls/demo_shop-tls.crt"


def shop_certificate(not_after: datetime.datetime, serial: int, *names: str) -> IssuedCertificate:
    return make_certificate(
        common_name="shop.example.com",
        dns_names=names or ("shop.example.com",),
        not_before=START - DAY,
        not_after=not_after,
        serial=serial,
    )


@pytest.mark.parametrize(
    ("names", "server_name", "covered"),
    [
        (["shop.example.com"], "shop.example.com", True),
        (["Shop.Example.COM"], "shop.EXAMPLE.com", True),
        (["*.example.com"], "shop.example.com", True),
        (["*.example.com"], "a.shop.example.com", False),  # a wildcard is one label only
        (["*.example.com"], "example.com", False),
        (["*.example.com"], "*.example.com", True),  # nginx's wildcard server name, the same wildcard
        (["shop.example.com"], "*.example.com", False),
        (["*.shop.example.com"], "shop.example.com", False),
        (["198.51.100.10"], "198.51.100.10", True),
        (["*.100.10"], "198.51.100.10", False),  # an address is never matched by a wildcard
        (["other.example.com"], "shop.example.com", False),
    ],
)
def test_server_names_are_matched_as_rfc_6125_says(names: list[str], server_name: str, covered: bool) -> None:
    assert covers(names, server_name) is covered


def test_the_common_name_counts_only_without_subject_alternative_names() -> None:
    with_san = make_certificate(
        common_name="cn.example.com",
        dns_names=("san.example.com",),
        ip_addresses=("198.51.100.10",),
        not_before=START,
        not_after=START + DAY,
        serial=7,
    )
    cn_only = make_certificate(
        common_name="cn.example.com", not_before=START, not_after=START + DAY, serial=8
    )

    read = inspect_certificate(with_san.certificate, ("cn.example.com", "san.example.com", "198.51.100.10"))
    assert read.subject_names == ("san.example.com", "198.51.100.10")
    assert read.uncovered == ("cn.example.com",)
    assert read.serial == "07"  # whole bytes, as openssl prints it
    assert inspect_certificate(cn_only.certificate, ("cn.example.com",)).uncovered == ()


@dataclass
class WallClock:
    now: datetime.datetime = START

    def __call__(self) -> datetime.datetime:
        return self.now


@dataclass
class TlsWorld:
    resources: Sample
    lb1: FakeNode
    lb2: FakeNode
    sink: RecordingSink
    reconciler: Reconciler
    wall_clock: WallClock

    def run_pass(self) -> list[Event]:
        return self.reconciler.run_pass(self.resources.resources())

    def use(self, issued: IssuedCertificate) -> None:
        self.resources.secrets[SHOP_TLS] = tls_secret(issued.certificate, issued.private_key)

    def shop_writes(self) -> list[VirtualHostStatus]:
        return [
            status
            for plural, name, status in self.sink.writes
            if plural == "virtualhosts" and name == "shop" and isinstance(status, VirtualHostStatus)
        ]

    def condition(self, condition_type: str) -> tuple[str, str]:
        found = find_condition(self.shop_writes()[-1].conditions, condition_type)
        assert found is not None
        return found.status, found.reason


def make_tls_world(warning_days: float = 14.0) -> TlsWorld:
    lb1 = FakeNode("lb1", addresses={"198.51.100.11/24"}, vips={VIP})
    lb2 = FakeNode("lb2", addresses={"198.51.100.12/24"})
    sink, wall_clock = RecordingSink(), WallClock()
    settings = OperatorConfig(verify_timeout_seconds=0.3, certificate_warning_days=warning_days)
    reconciler = Reconciler(
        FakeNodes({"lb1": lb1, "lb2": lb2}),
        sink,
        PrometheusRecorder(),
        settings,
        FakeClock(),
        wall_clock=wall_clock,
    )
    world = TlsWorld(
        sample("seed-tutorial.yaml", "tls-virtualhost.yaml"), lb1, lb2, sink, reconciler, wall_clock
    )
    world.use(shop_certificate(START + 20 * DAY, 0x1001))
    return world


def certificate_events(events: list[Event]) -> list[tuple[str, str, str]]:
    return [
        (event.type, event.reason, str(event.regarding))
        for event in events
        if event.reason.startswith("Certificate")
    ]


def test_status_reports_the_served_certificate() -> None:
    world = make_tls_world()

    events = world.run_pass()

    certificate = world.shop_writes()[-1].certificate
    assert certificate is not None
    assert certificate.not_after == "2026-12-20T12:00:00Z"
    assert certificate.serial == "1001"
    assert certificate.subject_names == ["shop.example.com"]
    assert certificate.covers_server_names
    assert world.condition("CertificateValid") == ("True", "Valid")
    assert world.condition("CertificateExpiring") == ("False", "NotExpiring")
    assert certificate_events(events) == []


def test_time_passing_alone_raises_the_warning_then_the_expiry_once_each() -> None:
    world = make_tls_world()
    world.run_pass()
    writes = len(world.shop_writes())

    world.wall_clock.now = START + 5 * DAY  # 15 days left: outside the 14-day window
    assert certificate_events(world.run_pass()) == []
    assert len(world.shop_writes()) == writes  # nothing changed: nothing written

    world.wall_clock.now = START + 7 * DAY  # 13 days left
    events = world.run_pass()
    assert certificate_events(events) == [("Warning", "CertificateExpiresSoon", "VirtualHost demo/shop")]
    assert world.condition("CertificateExpiring") == ("True", "CertificateExpiresSoon")
    assert world.condition("CertificateValid") == ("True", "Valid")
    assert len(world.shop_writes()) == writes + 1

    world.wall_clock.now = START + 8 * DAY
    assert certificate_events(world.run_pass()) == []
    assert len(world.shop_writes()) == writes + 1  # the same conditions: no write, no second event

    world.wall_clock.now = START + 20 * DAY
    events = world.run_pass()
    assert certificate_events(events) == [("Warning", "CertificateExpired", "VirtualHost demo/shop")]
    assert world.condition("CertificateExpiring") == ("True", "CertificateExpired")
    assert world.condition("CertificateValid") == ("False", "CertificateExpired")


def test_the_warning_window_is_the_operators_setting() -> None:
    world = make_tls_world(warning_days=30)

    events = world.run_pass()

    assert certificate_events(events) == [("Warning", "CertificateExpiresSoon", "VirtualHost demo/shop")]
    assert (
        OperatorConfig.from_environment({"LBPAIR_CERTIFICATE_WARNING_DAYS": "30"}).certificate_warning_days
        == 30
    )
    with pytest.raises(
        ConfigError, match="LBPAIR_CERTIFICATE_WARNING_DAYS='-1' must be a positive number of days"
    ):
        OperatorConfig.from_environment({"LBPAIR_CERTIFICATE_WARNING_DAYS": "-1"})


def test_a_certificate_not_covering_a_server_name_is_reported() -> None:
    world = make_tls_world()
    world.use(shop_certificate(START + 90 * DAY, 0x2002, "www.example.com"))

    events = world.run_pass()

    assert world.condition("CertificateValid") == ("False", "CertificateNamesNotCovered")
    certificate = world.shop_writes()[-1].certificate
    assert certificate is not None
    assert certificate.uncovered_server_names == ["shop.example.com"]
    assert certificate_events(events) == [("Warning", "CertificateNamesNotCovered", "VirtualHost demo/shop")]


def test_a_rotated_secret_reaches_both_nodes_and_status_clears_the_warning() -> None:
    world = make_tls_world()
    world.wall_clock.now = START + 10 * DAY
    world.run_pass()
    assert world.condition("CertificateExpiring") == ("True", "CertificateExpiresSoon")

    renewed = shop_certificate(START + 100 * DAY, 0x3003)
    world.use(renewed)
    events = world.run_pass()

    for node in (world.lb1, world.lb2):
        assert node.files[CERTIFICATE_FILE].content == renewed.certificate
    certificate = world.shop_writes()[-1].certificate
    assert certificate is not None
    assert certificate.serial == "3003"
    assert world.condition("CertificateExpiring") == ("False", "NotExpiring")
    assert certificate_events(events) == []
