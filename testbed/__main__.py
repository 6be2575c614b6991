"""Command line of the test bed: `python -m testbed lab|cluster up|down|status`, `python -m testbed cleanup`.

`python -m testbed lab plan` shows the address plan a lab would get on this machine now, and why.

Run from the repository root as root, with PYTHONPATH=.:operator. Each area of the test bed registers its
own subcommands in build_parser().
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from testbed.addressing import MAX_PAIRS, PAIRS_VARIABLE, ROOT_MGMT_LINK, SWITCH_NAMESPACE, AddressPlan
from testbed.cluster import CLI_RUN_DIR, ControlPlane, stop_test_control_planes, tools_bin_dir
from testbed.demo import demo_down, demo_up
from testbed.kubenode import remove_node
from testbed.lab import STATE_FILE, Lab, LabError, choose_address_plan, cleanup, leftovers_exist


def lab_up(args: argparse.Namespace) -> int:
    lab = Lab.up(reuse=not args.fresh, pairs=args.pairs)
    print_address_plan(lab.plan)
    print(f"lab up; plan and state in {STATE_FILE}. Log in to a node with:")
    known_hosts = f"UserKnownHostsFile={lab.known_hosts_path}"
    print(f"  ssh -i {lab.ssh_key_path} -o {known_hosts} root@{lab.mgmt_address('lb1')}")
    return 0


def lab_down(_args: argparse.Namespace) -> int:
    try:
        lab = Lab.attach()
    except LabError:
        # No state file: whatever is left belongs to a crashed run.
        cleanup()
        return 0
    lab.down()
    return 0


def lab_cleanup(_args: argparse.Namespace) -> int:
    cleanup()
    return 0


def print_address_plan(plan: AddressPlan) -> None:
    print("networks:")
    for segment, network in plan.networks.items():
        print(f"  {segment:<6} {network}")
    for pair in range(1, plan.pairs + 1):
        vips = ", ".join(str(vip) for vip in plan.pair_vips(pair))
        print(f"  pair {pair} {' + '.join(plan.pair_nodes(pair))}: VIPs {vips}")
    print(f"  switch namespace {SWITCH_NAMESPACE}; root link {ROOT_MGMT_LINK} {plan.root_mgmt_address}")
    print("hosts:")
    for host in plan.hosts.values():
        interfaces = ", ".join(f"{i.name}={i.address} ({i.segment})" for i in host.interfaces)
        print(f"  {host.name:<7} {host.role:<8} {host.namespace:<11} {interfaces}")


def lab_plan(_args: argparse.Namespace) -> int:
    """The plan `lab up` would choose now (or the running lab's), and what it keeps clear of."""
    try:
        lab = Lab.attach()
    except LabError:
        pass
    else:
        print(f"a lab is up on this plan (from {STATE_FILE}):")
        print_address_plan(lab.plan)
        return 0
    choice = choose_address_plan()
    print("no lab is up; `lab up` would choose:")
    for line in choice.explanation:
        print(f"  {line}")
    print("protected (resolvers, /etc/hosts, package registries and proxies, LBPAIR_LAB_PROTECT):")
    for entry in choice.facts.protected:
        print(f"  {entry.network} {entry.source}")
    for name in choice.facts.unresolved:
        print(f"  not resolved: {name}")
    print_address_plan(choice.plan)
    return 0


def lab_status(_args: argparse.Namespace) -> int:
    """Exit 0 only if the lab is up and every host is healthy."""
    try:
        lab = Lab.attach()
    except LabError as error:
        print(f"status: {error}")
        if leftovers_exist():
            print("status: remains of an earlier lab exist; `lab cleanup` removes them")
        return 1
    print_address_plan(lab.plan)
    print("health:")
    health = lab.status()
    for host_health in health:
        services = " ".join(f"{name}={state}" for name, state in host_health.services.items())
        held = " ".join(str(address) for address in host_health.held)
        faults = f" FAULTS: {', '.join(host_health.faults)}" if host_health.faults else ""
        verdict = "ok" if host_health.healthy else "NOT OK"
        print(
            f"  {host_health.host.name:<7} {verdict:<6} {services or '-'} | addresses: {held or '-'}{faults}"
        )
    return 0 if all(host_health.healthy for host_health in health) else 1


def add_lab_commands(areas: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab_parser = areas.add_parser("lab", help="the network-namespace lab (needs root)")
    commands = lab_parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="bring the lab up (reuses a healthy running lab)")
    up.add_argument("--fresh", action="store_true", help="always rebuild from scratch")
    up.add_argument(
        "--pairs",
        type=int,
        choices=range(1, MAX_PAIRS + 1),
        help=f"pairs of LB nodes (lb1+lb2, lb3+lb4, ...; default: {PAIRS_VARIABLE}, else 1); "
        "a running lab is resized",
    )
    up.set_defaults(handler=lab_up)
    commands.add_parser("down", help="stop and remove the lab").set_defaults(handler=lab_down)
    commands.add_parser("status", help="address plan and host health").set_defaults(handler=lab_status)
    commands.add_parser(
        "plan", help="the address plan `lab up` would choose on this machine now, and why"
    ).set_defaults(handler=lab_plan)
    commands.add_parser(
        "cleanup", help="remove leftovers of a crashed run (lbp-* namespaces, links, /etc/netns, state)"
    ).set_defaults(handler=lab_cleanup)


def cli_control_plane() -> ControlPlane:
    return ControlPlane(run_dir=CLI_RUN_DIR, bin_dir=tools_bin_dir())


def cluster_up(_args: argparse.Namespace) -> int:
    plane = cli_control_plane()
    plane.start()
    print(f"control plane up: export KUBECONFIG={plane.kubeconfig}")
    return 0


def cluster_down(_args: argparse.Namespace) -> int:
    cli_control_plane().stop()
    return 0


def cluster_status(_args: argparse.Namespace) -> int:
    plane = cli_control_plane()
    if not plane.is_running():
        print("control plane: not running")
        return 1
    print(f"control plane: running at {plane.server}; KUBECONFIG={plane.kubeconfig}")
    return 0


def add_cluster_commands(areas: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cluster_parser = areas.add_parser("cluster", help="the local control plane (etcd + kube-apiserver)")
    commands = cluster_parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start it (reuses a running one)").set_defaults(handler=cluster_up)
    commands.add_parser("down", help="stop it and remove its state").set_defaults(handler=cluster_down)
    commands.add_parser("status", help="is it running, where").set_defaults(handler=cluster_status)


def add_demo_commands(areas: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo_parser = areas.add_parser("demo", help="the operator's main job on the control plane and lab")
    commands = demo_parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start everything and run the demo").set_defaults(
        handler=lambda _: demo_up()
    )
    commands.add_parser("down", help="stop the operator, lab and control plane").set_defaults(
        handler=lambda _: demo_down()
    )


def cleanup_everything(_args: argparse.Namespace) -> int:
    """Leftovers of crashed runs: the kubelet node (restoring what it changed on the machine), the lab,
    control planes of test sessions, the CLI control plane."""
    remove_node()
    demo_down()
    stop_test_control_planes()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m testbed", description=__doc__.splitlines()[0])
    areas = parser.add_subparsers(dest="area", required=True)
    add_lab_commands(areas)
    add_cluster_commands(areas)
    add_demo_commands(areas)
    areas.add_parser(
        "cleanup", help="remove leftovers of crashed runs (kubelet node, lab and control planes)"
    ).set_defaults(handler=cleanup_everything)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        exit_code: int = args.handler(args)
    except LabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
