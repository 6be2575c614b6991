"""The boundaries the model and the build enforce, held against the real `nginx -t`.

Proxy buffer combinations: each one the model refuses (naming the field) is one nginx refuses too, which
the test shows by rendering it anyway (bypassing the model) and running the real `nginx -t` on it; the
largest combination the rules allow passes both. Backend host names: what the operator renders for a
resolved name passes `nginx -t`, where the name itself would not have had to resolve on the node.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from lbpair.model import SpecError, parse_virtual_host
from lbpair.render import render_pair
from lbpair.render.model import Buffers, DesiredState, ProxyTuning
from tests.golden.test_golden import install, nginx_test
from tests.unit.samples import sample

pytestmark = pytest.mark.golden

# (proxy settings of a location, the field the model names, what nginx -t says)
REFUSED = [
    (
        {"buffers": {"number": 2, "size": "1k"}},
        "busyBuffersSize",
        '"proxy_busy_buffers_size" must be less than the size of all "proxy_buffers" minus one buffer',
    ),
    (
        {"bufferSize": "256k"},
        "busyBuffersSize",
        '"proxy_busy_buffers_size" must be less than the size of all "proxy_buffers" minus one buffer',
    ),
    (
        {"buffers": {"number": 2, "size": "1k"}, "bufferSize": "256k"},
        "busyBuffersSize",
        '"proxy_busy_buffers_size" must be less than the size of all "proxy_buffers" minus one buffer',
    ),
    (
        {"buffers": {"number": 4, "size": "8k"}, "busyBuffersSize": "4k"},
        "busyBuffersSize",
        '"proxy_busy_buffers_size" must be equal to or greater than the maximum of the value of '
        '"proxy_buffer_size" and one of the "proxy_buffers"',
    ),
    (
        {"bufferSize": "8k", "tempFileWriteSize": "4k"},
        "tempFileWriteSize",
        '"proxy_temp_file_write_size" must be equal to or greater than the maximum of the value of '
        '"proxy_buffer_size" and one of the "proxy_buffers"',
    ),
    (
        {"bufferSize": "16k", "busyBuffersSize": "16k", "tempFileWriteSize": "16k", "maxTempFileSize": "8k"},
        "maxTempFileSize",
        '"proxy_max_temp_file_size" must be equal to zero to disable temporary files usage or must be equal '
        'to or greater than the maximum of the value of "proxy_buffer_size" and one of the "proxy_buffers"',
    ),
    ({"buffers": {"number": 4, "size": "0"}}, "buffers.size", '"proxy_buffers" directive invalid value'),
]
ACCEPTED_AT_THE_EDGE = {
    "bufferSize": "8k",
    "buffers": {"number": 4, "size": "8k"},
    "busyBuffersSize": "24k",  # exactly all buffers minus one
    "tempFileWriteSize": "8k",
    "maxTempFileSize": "8k",
}


def tuning(proxy: dict[str, Any]) -> ProxyTuning:
    buffers = proxy.get("buffers")
    return ProxyTuning(
        buffer_size=proxy.get("bufferSize"),
        buffers=Buffers(buffers["number"], buffers["size"]) if buffers else None,
        busy_buffers_size=proxy.get("busyBuffersSize"),
        temp_file_write_size=proxy.get("tempFileWriteSize"),
        max_temp_file_size=proxy.get("maxTempFileSize"),
    )


def nginx_t_with_tuning(proxy: dict[str, Any], root: Path) -> tuple[int, str]:
    """`nginx -t` on the seed pair with exactly this buffer tuning in www's first location, rendered
    without the model."""
    state = sample("seed-tutorial.yaml").build().state
    hosts = [
        dataclasses.replace(host, locations=[dataclasses.replace(host.locations[0], tuning=tuning(proxy))])
        if host.source.name == "www"
        else host
        for host in state.virtual_hosts
    ]
    node = next(iter(render_pair(dataclasses.replace(state, virtual_hosts=hosts)).values()))
    install(node, root)
    result = nginx_test(root)
    return result.returncode, result.stderr


def model_problems(proxy: dict[str, Any]) -> list[str]:
    """The model's problems with www whose first location has exactly this buffer tuning."""
    spec = sample("seed-tutorial.yaml").vhost("www")["spec"]
    for name in ("bufferSize", "buffers", "busyBuffersSize", "tempFileWriteSize", "maxTempFileSize"):
        spec["proxy"].pop(name, None)
    spec["locations"][0]["proxy"] = proxy
    try:
        parse_virtual_host({"metadata": {"name": "www", "namespace": "demo"}, "spec": spec})
    except SpecError as error:
        return error.problems
    return []


@pytest.mark.parametrize(("proxy", "field", "nginx_says"), REFUSED)
def test_what_the_model_refuses_nginx_t_refuses(
    proxy: dict[str, Any], field: str, nginx_says: str, tmp_path: Path
) -> None:
    problems = model_problems(proxy)
    returncode, stderr = nginx_t_with_tuning(proxy, tmp_path)

    assert len(problems) == 1
    assert problems[0].startswith(f"spec.locations[0].proxy.{field}: "), problems
    assert returncode != 0
    assert nginx_says in stderr


def test_the_edge_of_the_rules_passes_the_model_and_nginx_t(tmp_path: Path) -> None:
    returncode, stderr = nginx_t_with_tuning(ACCEPTED_AT_THE_EDGE, tmp_path)

    assert model_problems(ACCEPTED_AT_THE_EDGE) == []
    assert returncode == 0, stderr


def test_backend_host_names_are_rendered_resolved_and_pass_nginx_t(tmp_path: Path) -> None:
    """The names do not resolve on the machine running nginx -t: only their addresses reach nginx."""
    resources = sample("seed-tutorial.yaml")
    resources.dns = {
        "app.backend.invalid": ["198.18.0.21", "198.18.0.22"],
        "api.backend.invalid": ["198.18.0.23"],
    }
    resources.upstream("lb-www")["spec"]["servers"][0]["address"] = "app.backend.invalid"
    www = resources.vhost("www")["spec"]
    # nginx's defaults for the Host header and redirects, which must keep naming the host as written.
    www["proxy"]["headers"] = [header for header in www["proxy"]["headers"] if header["name"] != "Host"]
    del www["proxy"]["redirect"]
    location = www["locations"][0]
    del location["upstreamRef"]
    location["url"] = "http://api.backend.invalid:8080/v1/"
    build = resources.build()
    assert build.problems == []
    state: DesiredState = build.state
    node = next(iter(render_pair(state).values()))
    install(node, tmp_path)

    result = nginx_test(tmp_path)

    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr, result.stderr
    config = "\n".join(file.content for file in node.files.values())
    assert "server 198.18.0.21:80 weight=1 max_fails=3 fail_timeout=30s;  # app.backend.invalid" in config
    assert "server 198.18.0.22:80 weight=1 max_fails=3 fail_timeout=30s;  # app.backend.invalid" in config
    assert "backend.invalid;" not in config.replace("  # app.backend.invalid", "")
    assert "proxy_set_header Host api.backend.invalid:8080;" in config
    assert "proxy_redirect http://api.backend.invalid:8080/v1/ /;" in config
