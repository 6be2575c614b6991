"""The nodes' files -> manifests: nginx from the first node (compared with the second), keepalived merged
from both (pure: no SSH here, see node_files.py)."""

from __future__ import annotations

from collections.abc import Sequence

from lbpair.adopt.keepalived_conf import parse_keepalived
from lbpair.adopt.keepalived_map import NodeKeepalived, import_keepalived
from lbpair.adopt.manifests import Manifests, NodeTarget, PairOptions, build_manifests, upstream_object_names
from lbpair.adopt.nginx_conf import parse_tree
from lbpair.adopt.nginx_http import import_main
from lbpair.adopt.nginx_servers import import_servers
from lbpair.adopt.node_files import NodeFiles
from lbpair.adopt.notes import Note


def import_nodes(
    options: PairOptions, targets: Sequence[NodeTarget], files: Sequence[NodeFiles], keepalived_path: str
) -> Manifests:
    """Raises KeepalivedSyntaxError, NginxConfError, KeepalivedImportError or AdoptError when nothing
    usable can be printed."""
    first = files[0]
    http = import_main(parse_tree(first.nginx_main, first.nginx))
    servers = import_servers(http.servers, http.proxy_defaults, upstream_object_names(http), http.cache_zones)
    notes: list[Note] = []
    for target, other in zip(targets[1:], files[1:], strict=True):
        if other.nginx != first.nginx:
            notes.append(
                Note(target.address, first.nginx_main, f"nginx's files differ from {targets[0].address}'s, "
                     "which were imported; the operator runs one nginx configuration on both nodes")
            )  # fmt: skip
    keepalived = None
    if len(files) == 2:  # noqa: PLR2004 - a pair
        keepalived = import_keepalived(
            [
                NodeKeepalived(
                    label=f"{target.address}:{keepalived_path}",
                    statements=parse_keepalived(node.keepalived),
                    interface_addresses=tuple(a for found in node.addresses.values() for a in found),
                )
                for target, node in zip(targets, files, strict=True)
            ]
        )
    manifests = build_manifests(options, list(targets), http, servers, keepalived)
    manifests.notes[:0] = notes
    return manifests
