"""keepalived's block syntax: the seed's own files parse as keepalived reads them, and input that is not
keepalived syntax (or passes a bound) is refused with the line named, never half-read."""

from __future__ import annotations

import pytest

from lbpair.adopt.keepalived_conf import (
    MAX_DEPTH,
    MAX_INPUT_BYTES,
    KeepalivedStatement,
    KeepalivedSyntaxError,
    parse_keepalived,
)
from tests.unit.adopt_inputs import SEED_FILES


def test_the_seed_file_parses_into_blocks_with_comments_and_quotes_removed() -> None:
    statements = parse_keepalived((SEED_FILES / "keepalived-lb1.conf").read_text())

    assert [s.keyword for s in statements] == ["global_defs", "vrrp_script", "vrrp_instance"]
    global_defs, script, instance = statements
    assert global_defs.children("notification_email")[0].block == (
        KeepalivedStatement("ops@example.com", (), 8),
        KeepalivedStatement("tech@example.com", (), 9),
    )
    assert global_defs.first("router_id") == KeepalivedStatement("router_id", ("lb1",), 15)
    assert script.args == ("chk_http_port",)
    assert script.first("script") == KeepalivedStatement("script", ("/etc/keepalived/chk_nginx.sh",), 19)
    assert script.first("weight") == KeepalivedStatement("weight", ("-5",), 21)
    assert instance.args == ("VI_1",)
    authentication = instance.first("authentication")
    assert authentication is not None
    assert authentication.first("auth_pass") == KeepalivedStatement("auth_pass", ("1111",), 35)
    vips = instance.first("virtual_ipaddress")
    assert vips is not None
    assert [entry.keyword for entry in vips.block or ()] == ["198.51.100.10"]


def test_braces_may_share_a_line_and_a_quoted_string_keeps_its_spaces_and_comment_characters() -> None:
    text = 'vrrp_script chk { script "/bin/check --name=#1 !x" ; interval 2 }\nvrrp_instance VI_1 {\n}\n'

    script, instance = parse_keepalived(text)

    assert script.block == (
        KeepalivedStatement("script", ("/bin/check --name=#1 !x", ";", "interval", "2"), 1),
    )
    assert instance == KeepalivedStatement("vrrp_instance", ("VI_1",), 2, ())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("global_defs {\n router_id a\n", "line 1: block global_defs is never closed"),
        ("router_id a\n}\n", "line 2: '}' without an open block"),
        ('vrrp_script a {\n script "/bin/x\n}\n', "line 2: unterminated quoted string"),
        ("{\n}\n", "line 1: '{' without a keyword"),
        ("a {\n" * (MAX_DEPTH + 1) + "}\n" * (MAX_DEPTH + 1), f"blocks nested deeper than {MAX_DEPTH}"),
        ("x" * (MAX_INPUT_BYTES + 1), "larger than 1024 KiB"),
    ],
)
def test_what_is_not_keepalived_syntax_is_refused_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(KeepalivedSyntaxError, match=message):
        parse_keepalived(text)
