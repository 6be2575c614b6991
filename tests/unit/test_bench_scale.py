"""The scale bench's readings (bench/scale_measure.py): writes from kubectl's watch stream, the operator's
own pass and rollout timings from its log, and the Ansible template made from the operator's file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.ansible import EDIT_PATH_MARK, AnsiblePush
from bench.scale_measure import log_timings, pass_outcomes, watch_events


def test_every_watch_event_is_one_write_of_the_object_it_names() -> None:
    events = [
        {"type": "MODIFIED", "object": {"metadata": {"name": "edit", "resourceVersion": "10"}}},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "11"}}},
        {"type": "MODIFIED", "object": {"metadata": {"name": "edit", "resourceVersion": "12"}}},
        {"type": "ADDED", "object": {"metadata": {"name": "p1.1871", "resourceVersion": "13"}}},
    ]
    # kubectl -o json pretty-prints each event: one document over many lines, one after another.
    stream = "\n".join(json.dumps(event, indent=4) for event in events) + "\n"

    assert watch_events(stream) == [("edit", "MODIFIED"), ("edit", "MODIFIED"), ("p1.1871", "ADDED")]
    assert watch_events("") == []


def test_the_operator_log_gives_the_seconds_of_applied_passes_and_rollouts_of_one_pair() -> None:
    log = """\
node rollout pair=ns/p1 node=lb2 outcome=applied files_changed=1 drifted=0 seconds=0.400
node rollout pair=ns/p1 node=lb1 outcome=applied files_changed=1 drifted=0 seconds=0.600
pass pair=ns/p1 outcome=applied seconds=1.100 files_changed=2 reloads=nginx@lb2
pass pair=ns/p1 outcome=unchanged seconds=0.100 files_changed=0 reloads=-
pass pair=ns/p2 outcome=applied seconds=9.000 files_changed=2 reloads=nginx@lb4
"""
    timings = log_timings(log, "ns/p1")

    assert sorted(timings) == ["applied_pass", "rollout_lb1", "rollout_lb2"]
    assert (timings["applied_pass"]["median"], timings["applied_pass"]["runs"]) == (1.1, 1)
    assert timings["rollout_lb2"]["median"] == 0.4
    assert log_timings("", "ns/p1") == {}
    outcomes = pass_outcomes(log, "ns/p1")
    assert {outcome: figures["runs"] for outcome, figures in outcomes.items()} == {
        "applied": 1,
        "unchanged": 1,
    }


def test_the_ansible_template_is_the_operators_file_with_the_edited_path_as_its_variable(
    tmp_path: Path,
) -> None:
    push = AnsiblePush.__new__(AnsiblePush)
    push.workdir = tmp_path
    live = "server {\n    server_name edit.example.com;\n    proxy_pass http://198.18.0.12:8080/edit-3/;\n}\n"

    template = push.write_template(live, "/edit-3/")

    assert template.read_text() == live.replace("/edit-3/", EDIT_PATH_MARK)
    with pytest.raises(ValueError, match="cannot make a template"):
        push.write_template(live, "/edit-4/")  # not in the file: the template would change nothing
