"""An Upstream following a Service with no ready endpoint: the real `nginx -t` accepts what is rendered
for it (nginx refuses an upstream with no server), with no warning, also with several such Upstreams."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from lbpair.build.services import ServiceView
from lbpair.model.common import ObjectRef
from lbpair.render import render_pair
from tests.golden.test_golden import install, nginx_test
from tests.unit.samples import NAMESPACE, sample

pytestmark = pytest.mark.golden


def test_upstreams_with_no_ready_endpoint_pass_nginx_t_without_warnings(tmp_path: Path) -> None:
    resources = sample("seed-tutorial.yaml", "service-upstream.yaml")
    empty = ServiceView(ports=(("http", 80),), slices=())
    resources.services = {ObjectRef(NAMESPACE, f"web{n}"): empty for n in ("", "-2", "-3")}
    for suffix in ("-2", "-3"):
        upstream = copy.deepcopy(resources.upstream("web"))
        upstream["metadata"]["name"] = f"web{suffix}"
        upstream["spec"]["serviceRef"]["name"] = f"web{suffix}"
        resources.upstreams.append(upstream)
    build = resources.build()
    assert build.problems == []
    node = next(iter(render_pair(build.state).values()))
    assert sum("return 503;" in file.content for file in node.files.values()) == 3
    install(node, tmp_path)

    nginx = nginx_test(tmp_path)

    assert nginx.returncode == 0, nginx.stderr
    assert "[warn]" not in nginx.stderr, nginx.stderr
