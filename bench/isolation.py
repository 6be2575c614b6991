"""Tenant isolation benchmark (issue 10): objects nginx refuses, fed one after another through the shared
seed pair while another tenant edits its VirtualHost and a client loops through the VIP.

Each round applies a new VirtualHost whose certificate has a 1024-bit key (valid for the schema and the
model; nginx -t refuses it: "ee key too small"), then at once the other tenant's edit (a new server name
on its own VirtualHost), so both land in the same pass. The round's figure is the seconds from the edit
until it is served through the VIP; the refused objects must each end Accepted=False with nginx's
message, and no request through the VIP may fail. The baseline is the same edit with no refused object
in the round, measured in the same run.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from bench.stats import summary
from testbed.operator import attached_object, wait_for, weak_tls_secret
from testbed.traffic import RequestLoop

if TYPE_CHECKING:
    from bench.run import Bench

EDITED = "tenant-b"


def refused_objects(bench: Bench, count: int, baseline_runs: int) -> dict[str, Any]:
    bench.apply(weak_tls_secret(bench.namespace, "legacy-tls"))
    baseline = [_edit_live_seconds(bench, f"baseline-{run}", refused=None) for run in range(baseline_runs)]
    loop = RequestLoop(
        bench.lab, host="oa.example.com", interval=0.1, max_requests=20 * count, max_seconds=20.0 * count
    )
    with loop:
        with_refusal = [
            _edit_live_seconds(bench, f"round-{run}", refused=f"refused-{run}") for run in range(count)
        ]
    refused_names = [f"refused-{run}" for run in range(count)]
    wait_for(
        lambda: all(_refused_by_nginx(bench, name) for name in refused_names),
        timeout=120,
        what="every refused VirtualHost reporting nginx's refusal",
    )
    bench.kubectl("delete", "virtualhost", EDITED, *refused_names)
    bench.kubectl("delete", "secret", "legacy-tls")
    wait_for(bench.ready, timeout=120, what="Ready after cleanup")
    edit = summary(with_refusal)
    base = summary(baseline)
    return {
        "refused_objects": count,
        "edit_live_seconds_with_a_refusal_in_the_same_pass": edit,
        "edit_live_seconds_baseline": base,
        "median_ratio_to_baseline": round(edit["median"] / base["median"], 2),
        "failed_requests_through_vip": len(loop.failed),
        "requests_through_vip": len(loop.responses),
        "refused_objects_reported": count,
    }


def _edit_live_seconds(bench: Bench, label: str, refused: str | None) -> float:
    """Applies the refused object (if any), then the other tenant's edit; seconds until the edit is served."""
    host = f"{label}.example.com"
    if refused is not None:
        bench.apply(
            attached_object(
                "VirtualHost",
                bench.namespace,
                refused,
                bench.pair,
                {
                    "serverNames": [f"{refused}.example.com"],
                    "listen": [{"port": 443, "protocol": "HTTPS"}],
                    "tls": {"secretName": "legacy-tls"},
                    "locations": [{"path": "/", "upstreamRef": {"name": "lb-oa"}}],
                },
            )
        )
    spec = {"serverNames": [host], "locations": [{"path": "/", "upstreamRef": {"name": "lb-oa"}}]}
    started = time.monotonic()
    bench.apply(attached_object("VirtualHost", bench.namespace, EDITED, bench.pair, spec))
    wait_for(
        lambda: bench.lab.http_get_via(bench.vip, host, "/", timeout=1).succeeded,
        timeout=60,
        interval=0.05,
        what=f"{host} served through the VIP",
    )
    return time.monotonic() - started


def _refused_by_nginx(bench: Bench, name: str) -> bool:
    document = json.loads(bench.kubectl("get", "virtualhost", name, "-o", "json"))
    accepted = [c for c in document.get("status", {}).get("conditions", []) if c["type"] == "Accepted"]
    return (
        bool(accepted) and accepted[0]["status"] == "False" and "ee key too small" in accepted[0]["message"]
    )
