"""The Ansible side of the scale bench: edit-vhost.yml run against one lab pair (issue 9 item 6).

ansible-core comes from PyPI into a virtualenv of its own outside the repo (hack/install-ansible.sh, pinned
in hack/versions.env); the operator's venv and lock files never see it. Each run templates the changed
vhost file on both nodes (backup first), checks nginx -t and reloads, over SSH with pipelining and
persistent connections; host keys are checked against a known_hosts file made from the lab's pinned keys.
The persistent connections are closed when the bench is done with them (`close()`).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from testbed.addressing import SSH_PORT
from testbed.cluster import REPO_ROOT
from testbed.lab import Lab

HERE = Path(__file__).resolve().parent
PLAYBOOK = HERE / "edit-vhost.yml"
CONFIG = HERE / "ansible.cfg"
INSTALL_SCRIPT = REPO_ROOT / "hack" / "install-ansible.sh"
EDIT_PATH_MARK = "{{ edit_path }}"
RUN_TIMEOUT_SECONDS = 120


def install_ansible() -> Path:
    """The bin directory of the cached ansible-core venv (installed first if missing)."""
    completed = subprocess.run([str(INSTALL_SCRIPT)], capture_output=True, text=True, check=True, timeout=900)
    return Path(completed.stdout.strip().splitlines()[-1])


class AnsiblePush:
    """edit-vhost.yml against the nodes of one pair, in `order` (backup first), from `workdir`."""

    def __init__(self, lab: Lab, order: tuple[str, ...], workdir: Path, bin_dir: Path) -> None:
        self.lab, self.order, self.workdir, self.bin_dir = lab, order, workdir, bin_dir
        self.control_dir = workdir / "cp"
        self.control_dir.mkdir(parents=True, exist_ok=True)
        self.inventory = workdir / "inventory.ini"
        # Only the lab's pinned keys: never the machine's own known_hosts, never trust on first use.
        pinned = f"-o UserKnownHostsFile={lab.known_hosts_path} -o GlobalKnownHostsFile=/dev/null"
        hosts = "".join(f"{node} ansible_host={lab.mgmt_address(node)}\n" for node in order)
        self.inventory.write_text(
            f"[lb]\n{hosts}\n[lb:vars]\nansible_user=root\nansible_port={SSH_PORT}\n"
            f"ansible_ssh_private_key_file={lab.ssh_key_path}\n"
            f"ansible_ssh_common_args='{pinned}'\n"
        )

    def write_template(self, live_file: str, edited_path: str) -> Path:
        """A Jinja template of the vhost file as the operator rendered it (`live_file`, read off the first
        node), with the edited location's path as the variable the playbook fills in."""
        if "{{" in live_file or "{%" in live_file or edited_path not in live_file:
            raise ValueError(f"cannot make a template of the vhost file around {edited_path!r}")
        template = self.workdir / "vhost.conf.j2"
        template.write_text(live_file.replace(edited_path, EDIT_PATH_MARK))
        return template

    def run(self, template: Path, vhost_path: str, edit_path: str) -> float:
        """One push of the change; returns its wall-clock seconds. Raises if the playbook fails."""
        environment = {
            **os.environ,
            "ANSIBLE_CONFIG": str(CONFIG),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.control_dir),
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "tmp"),
            "ANSIBLE_HOME": str(self.workdir / "home"),
            "LC_ALL": "C.UTF-8",  # ansible-core refuses to start without a UTF-8 locale
        }
        command = [
            str(self.bin_dir / "ansible-playbook"),
            "-i", str(self.inventory),
            "-e", f"vhost_template={template}",
            "-e", f"vhost_path={vhost_path}",
            "-e", f"edit_path={edit_path}",
            str(PLAYBOOK),
        ]  # fmt: skip
        started = time.monotonic()
        completed = subprocess.run(
            command, env=environment, capture_output=True, text=True, check=False, timeout=RUN_TIMEOUT_SECONDS
        )
        seconds = time.monotonic() - started
        if completed.returncode != 0:
            raise RuntimeError(
                f"ansible-playbook failed ({completed.returncode}):\n{completed.stdout[-3000:]}"
            )
        return seconds

    def close(self) -> None:
        """End the persistent SSH connections the runs left: `-O exit` to each master's control socket."""
        for socket_path in sorted(self.control_dir.iterdir()):
            subprocess.run(
                ["ssh", "-O", "exit", "-o", f"ControlPath={socket_path}", "lbpair-lab-node"],
                capture_output=True, check=False, timeout=10,
            )  # fmt: skip
