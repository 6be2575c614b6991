"""Pure rendering: a DesiredState (the render model, `lbpair.render.model`) → the files of each node,
with content hashes.

The only package that imports jinja2. No clock, no I/O besides reading the packaged templates; the same
state always renders byte-identical files, so a hash comparison tells whether a node is up to date.
A pass usually changes one object or none, so a pair's renders go through a `RenderMemo`: a file whose
render-model part is equal to the last render's is not rendered again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jinja2

from lbpair.model.files import CONFIG_FILE_MODE, ManagedFile, manifest_hash
from lbpair.render.keepalived_model import NginxWatch, NodeConfig
from lbpair.render.model import DesiredState
from lbpair.render.syntax import FILTERS

SCRIPT_FILE_MODE = 0o755
# Autoescaping is for HTML; these are config files, and every value reaching a template is allow-listed
# by the model (see lbpair.model.patterns).
_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("lbpair.render", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # noqa: S701 - see above
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    auto_reload=False,  # packaged templates never change while running; checking costs a stat per file
)
_ENVIRONMENT.filters.update(FILTERS)


@dataclass(frozen=True)
class RenderedNode:
    """Every file the operator manages on one node."""

    name: str
    files: dict[str, ManagedFile]
    """Absolute path on the node → file, sorted by path."""
    nginx_hash: str
    """Hash of the nginx files; the node's nginx serves it on its loopback status port once loaded."""

    @property
    def config_hash(self) -> str:
        return manifest_hash(self.files.values())


def render_template(template: str, **context: Any) -> str:  # noqa: ANN401 - contexts are heterogeneous
    """One template with its render-model context (also what the template tests call)."""
    return _ENVIRONMENT.get_template(template).render(**context)


@dataclass
class RenderMemo:
    """The files of a pair's last render, by path, with the template and context each came from. At
    thousands of VirtualHosts running the templates is most of a render, and a pass usually changes one
    object or none. The render-model types are plain frozen dataclasses, so equal contexts render
    byte-identical files. One memo serves one pair (its passes never overlap)."""

    _files: dict[str, tuple[str, dict[str, Any], ManagedFile]] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)
    last: tuple[DesiredState, dict[str, RenderedNode]] | None = None
    """The last state rendered and its nodes: a pass that reuses its build (nothing changed) renders
    nothing."""

    def file(self, path: str, template: str, mode: int, **context: Any) -> ManagedFile:  # noqa: ANN401
        """The file `template` renders from `context`, from the memo when both are as last time."""
        self._seen.add(path)
        cached = self._files.get(path)
        if cached is not None and cached[0] == template and cached[1] == context:
            return cached[2]
        rendered = ManagedFile(path, render_template(template, **context), mode)
        self._files[path] = (template, context, rendered)
        return rendered

    def forget_unseen(self) -> None:
        """Drop the files the last render did not produce (removed objects)."""
        for path in self._files.keys() - self._seen:
            del self._files[path]
        self._seen.clear()


def render_nginx_files(state: DesiredState, memo: RenderMemo) -> tuple[list[ManagedFile], str]:
    """The nginx files (identical on both nodes) and their hash, which the status file serves."""
    banner = f"Managed by lbpair-operator for {state.pair}; local changes are overwritten."
    files = [memo.file(state.nginx.path, "nginx.conf.j2", CONFIG_FILE_MODE, banner=banner, main=state.nginx)]
    files += [
        memo.file(upstream.path, "upstream.conf.j2", CONFIG_FILE_MODE, banner=banner, upstream=upstream)
        for upstream in state.upstreams
    ]
    files += [
        memo.file(host.path, "vhost.conf.j2", CONFIG_FILE_MODE, banner=banner, host=host)
        for host in state.virtual_hosts
    ]
    files += state.tls_files
    nginx_hash = manifest_hash(files)
    status = memo.file(
        state.nginx.status_path,
        "status.conf.j2",
        CONFIG_FILE_MODE,
        banner=banner,
        main=state.nginx,
        nginx_hash=nginx_hash,
    )
    return [*files, status], nginx_hash


def _render_node(
    state: DesiredState, node: NodeConfig, nginx: list[ManagedFile], nginx_hash: str
) -> RenderedNode:
    banner = f"Managed by lbpair-operator for {state.pair}, node {node.name}; local changes are overwritten."
    files = list(nginx)
    keepalived = node.keepalived
    files.append(
        ManagedFile(
            keepalived.path,
            render_template("keepalived.conf.j2", banner=banner, keepalived=keepalived),
            CONFIG_FILE_MODE,
        )
    )
    if keepalived.maintenance is not None:
        # keepalived reads it on every change (inotify), so draining needs no reload.
        value = "1\n" if keepalived.maintenance.drained else "0\n"
        files.append(ManagedFile(keepalived.maintenance.path, value, CONFIG_FILE_MODE))
    if state.check_script is not None:
        script = render_template("check-nginx.sh.j2", banner=banner, script=state.check_script)
        files.append(ManagedFile(state.check_script.path, script, SCRIPT_FILE_MODE))
    if node.nginx_watch is not None:
        files += render_nginx_watch(node.nginx_watch)
    if node.firewall is not None:
        ruleset = render_template("nftables.conf.j2", banner=banner, firewall=node.firewall)
        files.append(ManagedFile(node.firewall.path, ruleset, CONFIG_FILE_MODE))
    return RenderedNode(
        name=node.name, files={f.path: f for f in sorted(files, key=lambda f: f.path)}, nginx_hash=nginx_hash
    )


def render_nginx_watch(watch: NginxWatch) -> list[ManagedFile]:
    """The watcher's program (the same bytes on every node: nginx_watch.py as packaged) and its config."""
    program = resources.files("lbpair.render").joinpath("nginx_watch.py").read_text()
    config = {
        "pidFile": watch.nginx_pid_path,
        "trackFile": watch.track_file,
        "stateDir": watch.state_dir,
        "listeners": [[listener.address, listener.port] for listener in watch.listeners],
        "intervalMilliseconds": watch.interval_milliseconds,
    }
    return [
        ManagedFile(watch.program_path, program, SCRIPT_FILE_MODE),
        ManagedFile(watch.config_path, json.dumps(config, indent=2, sort_keys=True) + "\n", CONFIG_FILE_MODE),
    ]


def render_pair(state: DesiredState, memo: RenderMemo | None = None) -> dict[str, RenderedNode]:
    """Node name → that node's files, in the pair's node order. The nginx files are the same on both
    nodes and rendered once; with the pair's `memo`, only those whose inputs changed since its last
    render."""
    memo = memo or RenderMemo()
    if memo.last is not None and memo.last[0] is state:
        return memo.last[1]
    nginx, nginx_hash = render_nginx_files(state, memo)
    memo.forget_unseen()
    rendered = {node.name: _render_node(state, node, nginx, nginx_hash) for node in state.nodes}
    memo.last = (state, rendered)
    return rendered


__all__ = [
    "RenderMemo",
    "RenderedNode",
    "render_nginx_files",
    "render_nginx_watch",
    "render_pair",
    "render_template",
]
