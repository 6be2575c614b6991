"""Templates on hand-built render models (the NGINX Ingress Controller `version2` style): each feature
of the model maps to the directive it should, independent of how the build fills the model."""

from __future__ import annotations

import pytest

from lbpair.render import render_template
from lbpair.render.keepalived_model import CheckScript, Keepalived, VirtualAddress, VrrpInstance
from lbpair.render.keepalived_model import GarpTuning as Garp
from lbpair.render.model import (
    Balancing,
    Buffers,
    CacheValidity,
    ErrorLog,
    Header,
    Listen,
    Location,
    LocationCache,
    ObjectKey,
    ProxyTuning,
    TlsFiles,
    Upstream,
    UpstreamServer,
    VirtualHost,
)
from lbpair.render.syntax import on_off, seconds

SOURCE = ObjectKey("VirtualHost", "team", "shop")


def host(**changes: object) -> VirtualHost:
    base: dict[str, object] = {
        "source": SOURCE,
        "path": "/etc/nginx/lbpair/vhost_team_shop.conf",
        "server_names": ["shop.example.com", "www.shop.example.com"],
        "listens": [Listen(80)],
        "redirect_listens": [],
        "tls": None,
        "access_log": None,
        "error_log": ErrorLog("/var/log/nginx/team_shop.error.log", "warn"),
        "locations": [Location(path="/", exact=False, upstream="team_shop", url=None)],
    }
    return VirtualHost(**{**base, **changes})  # type: ignore[arg-type]


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_https_host_with_redirect_gets_two_servers_and_its_certificate() -> None:
    text = render_template(
        "vhost.conf.j2",
        banner="b",
        host=host(
            listens=[Listen(443, ssl=True)],
            redirect_listens=[Listen(80)],
            tls=TlsFiles("/etc/nginx/lbpair/tls/team_shop.crt", "/etc/nginx/lbpair/tls/team_shop.key"),
        ),
    )

    assert lines(text).count("server_name shop.example.com www.shop.example.com;") == 2
    assert "listen 80;" in lines(text)
    assert "listen 443 ssl;" in lines(text)
    assert "return 301 https://$host$request_uri;" in lines(text)
    assert "ssl_certificate_key /etc/nginx/lbpair/tls/team_shop.key;" in lines(text)


def test_location_directives_follow_the_model() -> None:
    location = Location(
        path="/api",
        exact=True,
        upstream=None,
        url="http://198.18.0.11:8080/v1/",
        http11=True,
        headers=[
            Header("X-Real-IP", variable="remote_addr"),
            Header("X-Env", value="prod"),
            Header("Connection"),
        ],
        redirect="off",
        tuning=ProxyTuning(read_timeout="30s", buffers=Buffers(8, "16k"), next_upstream=["error", "timeout"]),
        cache=LocationCache("pages", [CacheValidity([200, 302], "10m")]),
    )

    text = lines(render_template("vhost.conf.j2", banner="b", host=host(locations=[location])))

    assert "location = /api {" in text
    assert "proxy_pass http://198.18.0.11:8080/v1/;" in text
    assert "proxy_http_version 1.1;" in text
    assert "proxy_set_header X-Real-IP $remote_addr;" in text
    assert "proxy_set_header X-Env prod;" in text
    assert 'proxy_set_header Connection "";' in text
    assert "proxy_redirect off;" in text
    assert "proxy_buffers 8 16k;" in text
    assert "proxy_next_upstream error timeout;" in text
    assert "proxy_cache pages;" in text
    assert "proxy_cache_valid 200 302 10m;" in text
    # No prefix "/" location: the template adds the 404 catch-all.
    assert text.count("return 404;") == 1


def test_upstream_balancing_methods() -> None:
    def balancing_line(balancing: Balancing) -> list[str]:
        upstream = Upstream(
            source=ObjectKey("Upstream", "team", "api"),
            path="/etc/nginx/lbpair/upstream_team_api.conf",
            name="team_api",
            balancing=balancing,
            keepalive=None,
            servers=[UpstreamServer("198.18.0.11", 80, 2, 3, "30s", backup=True)],
        )
        text = lines(render_template("upstream.conf.j2", banner="b", upstream=upstream))
        assert "server 198.18.0.11:80 weight=2 max_fails=3 fail_timeout=30s backup;" in text
        return text[text.index("upstream team_api {") + 1 : -2]

    assert balancing_line(Balancing()) == []
    assert balancing_line(Balancing("least_conn")) == ["least_conn;"]
    assert balancing_line(Balancing("hash", "request_uri", consistent=True)) == [
        "hash $request_uri consistent;"
    ]


def test_keepalived_instance_directives_follow_the_model() -> None:
    instance = VrrpInstance(
        name="lbpair_1",
        starts_as_master=False,
        interface="eth0",
        virtual_router_id=51,
        priority=100,
        advert_interval_milliseconds=100,
        nopreempt=True,
        preempt_delay_seconds=0,
        unicast_source="198.51.100.12",
        unicast_peers=["198.51.100.11"],
        multicast_source=None,
        auth_pass=None,
        virtual_addresses=[VirtualAddress("198.51.100.10/24", "eth0")],
        garp=Garp(master_repeat=5, master_refresh=0),
        track_script=None,
        track_process=None,
    )
    keepalived = Keepalived("/etc/keepalived/keepalived.conf", "lb2", 3, None, None, [instance])

    text = lines(render_template("keepalived.conf.j2", banner="b", keepalived=keepalived))

    assert "state BACKUP" in text
    assert "advert_int 0.1" in text
    assert "nopreempt" in text
    assert "unicast_src_ip 198.51.100.12" in text
    assert "198.51.100.10/24 dev eth0" in text
    assert "garp_master_repeat 5" in text
    assert "garp_master_refresh 0" in text  # 0 is a value (never), not "unset"
    assert not any(line.startswith(("mcast_src_ip", "authentication", "preempt_delay")) for line in text)


@pytest.mark.parametrize("restart", [True, False])
def test_check_script_restarts_nginx_only_when_asked(restart: bool) -> None:
    script = CheckScript("/etc/keepalived/lbpair-check-nginx.sh", "nginx", restart, 3)

    text = render_template("check-nginx.sh.j2", banner="b", script=script)

    assert text.startswith("#!/bin/sh\n")
    assert ("systemctl start nginx >/dev/null 2>&1" in text) is restart
    assert text.rstrip().endswith("exit 1")


@pytest.mark.parametrize(("milliseconds", "text"), [(1000, "1"), (100, "0.1"), (1250, "1.25"), (10, "0.01")])
def test_advert_interval_is_written_in_seconds(milliseconds: int, text: str) -> None:
    assert seconds(milliseconds) == text


def test_flags_are_on_or_off() -> None:
    assert (on_off(True), on_off(False)) == ("on", "off")
