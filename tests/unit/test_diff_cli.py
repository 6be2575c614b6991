"""`python -m lbpair diff|render` on local files, as a reviewer or a CI job runs it: its output and exit
status (0 same, 1 different, 2 error); and the bounds and redaction of every diff it and the preview show."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lbpair.diff_cli import main
from lbpair.filediff import MAX_DIFF_BYTES, MAX_DIFF_LINES, LiveFile, bound, diff_config
from lbpair.model.files import ManagedFile
from tests.unit.samples import SAMPLES, SEED_AUTH_PASS, TLS_INPUTS

SEED = str(SAMPLES / "seed-tutorial.yaml")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def seed_with(tmp_path: Path, old: str, new: str) -> str:
    text = Path(SEED).read_text()
    assert old in text
    edited = tmp_path / "edited.yaml"
    edited.write_text(text.replace(old, new))
    return str(edited)


def tls_secret_manifest(tmp_path: Path) -> str:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "shop-tls"},
        "type": "kubernetes.io/tls",
        "stringData": {
            "tls.crt": (TLS_INPUTS / "shop-tls.crt").read_text(),
            "tls.key": (TLS_INPUTS / "shop-tls.key").read_text(),
        },
    }
    path = tmp_path / "shop-tls.yaml"
    path.write_text(yaml.safe_dump(secret))
    return str(path)


@pytest.fixture
def rendered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The seed pair's files for lb2, as `render` writes them (what "main" runs)."""
    out = tmp_path / "main"
    assert run(capsys, "render", "-f", SEED, "-n", "demo", "--out", str(out))[0] == 0
    return out


def test_the_same_manifests_show_no_difference(rendered: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "diff", "-f", SEED, "-n", "demo", "--against-dir", str(rendered))

    assert (status, out) == (0, "")
    assert "lb2: 0 added, 0 changed, 0 removed" in err
    assert (rendered / "etc/nginx/lbpair/vhost_demo_www.conf").is_file()


def test_an_edited_manifest_shows_its_diff_and_exits_1(
    rendered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edited = seed_with(tmp_path, "url: http://198.18.0.11/svn/", "url: http://198.18.0.12/svn2/")
    status, out, _ = run(capsys, "diff", "-f", edited, "-n", "demo", "--against-dir", str(rendered))

    assert status == 1
    assert "--- a/etc/nginx/lbpair/vhost_demo_dev.conf\n" in out
    assert "-        proxy_pass http://198.18.0.11/svn/;\n" in out
    assert "+        proxy_pass http://198.18.0.12/svn2/;\n" in out


def test_errors_exit_2_and_say_why(
    rendered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = run(capsys, "diff", "-f", str(tmp_path / "none.yaml"), "--against-dir", str(rendered))
    assert missing[0] == 2
    assert "none.yaml" in missing[2]

    # The TLS host without its Secret: the operator would leave it out, so CI must not pass it.
    tls = str(SAMPLES / "tls-virtualhost.yaml")
    left_out = run(capsys, "diff", "-f", SEED, "-f", tls, "-n", "demo", "--against-dir", str(rendered))
    assert left_out[0] == 2
    assert "VirtualHost" in left_out[2]
    assert "shop" in left_out[2]

    nameless = tmp_path / "nameless.yaml"
    nameless.write_text("kind: Upstream\nspec: {}\n")
    unnamed = run(capsys, "diff", "-f", SEED, "-f", str(nameless), "--against-dir", str(rendered))
    assert unnamed == (2, "", "lbpair diff: Upstream without metadata.name\n")

    bad_vip = seed_with(tmp_path, "198.51.100.10/24", "198.51.100.300/24")
    rejected = run(capsys, "diff", "-f", bad_vip, "-n", "demo", "--against-dir", str(rendered))
    assert rejected[0] == 2
    assert "would reject the pair" in rejected[2]


def test_a_private_key_is_never_printed(
    rendered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tls, secret = str(SAMPLES / "tls-virtualhost.yaml"), tls_secret_manifest(tmp_path)
    status, out, _ = run(
        capsys, "diff", "-f", SEED, "-f", tls, "-f", secret, "-n", "demo", "--against-dir", str(rendered)
    )

    assert status == 1
    assert "PRIVATE KEY" not in out
    assert "# secret file added: content not shown\n" in out
    assert "BEGIN CERTIFICATE" in out  # the certificate is public
    assert f"auth_pass {SEED_AUTH_PASS}" not in out


def test_keepalived_password_is_masked_in_both_sides() -> None:
    old = LiveFile(0o644, "0" * 64, "vrrp_instance x {\n    auth_pass 1111\n    priority 99\n}\n")
    new = ManagedFile(
        "/etc/keepalived/keepalived.conf", "vrrp_instance x {\n    auth_pass 2222\n    priority 98\n}\n"
    )
    diff = diff_config([new], {new.path: old}).diff.text

    assert "1111" not in diff
    assert "2222" not in diff
    assert "+    priority 98\n" in diff
    assert "     auth_pass <redacted>\n" in diff  # unchanged as shown: the value is never shown


def test_a_long_diff_is_cut_and_says_so() -> None:
    many = [f"line {n}\n" for n in range(MAX_DIFF_LINES * 2)]
    cut = bound(many, "diff")
    assert cut.truncated
    assert cut.text.count("\n") == MAX_DIFF_LINES + 1
    assert cut.text.endswith(
        f"# diff truncated: {MAX_DIFF_LINES} of {MAX_DIFF_LINES * 2} lines shown "
        f"(limits {MAX_DIFF_LINES} lines, {MAX_DIFF_BYTES} bytes)\n"
    )

    wide = ["x" * 1023 + "\n"] * 1000  # 1 MiB in 1,000 lines: the byte limit cuts first
    cut = bound(wide, "diff")
    assert cut.truncated
    assert len(cut.text.encode()) <= MAX_DIFF_BYTES + 200
    assert not bound(many[:10], "diff").truncated


def test_added_changed_and_removed_files_are_counted() -> None:
    kept = ManagedFile("/etc/nginx/a.conf", "same\n")
    changed = ManagedFile("/etc/nginx/b.conf", "new\n")
    added = ManagedFile("/etc/nginx/c.conf", "added\n")
    live = {
        kept.path: LiveFile(kept.mode, kept.sha256, kept.content),
        changed.path: LiveFile(0o644, ManagedFile(changed.path, "old\n").sha256, "old\n"),
        "/etc/nginx/gone.conf": LiveFile(0o644, "1" * 64, "gone\n"),
    }
    diff = diff_config([kept, changed, added], live)

    assert (diff.added, diff.changed, diff.removed) == (
        (added.path,),
        (changed.path,),
        ("/etc/nginx/gone.conf",),
    )
    assert diff.file_list.text == f"A {added.path}\nM {changed.path}\nD /etc/nginx/gone.conf\n"
    assert "+++ /dev/null\n" in diff.diff.text
    assert "--- /dev/null\n" in diff.diff.text
