"""Operator settings come from LBPAIR_* variables, and a bad one is named at start."""

from __future__ import annotations

import pytest

from lbpair.config import ConfigError, OperatorConfig


def test_defaults_without_variables() -> None:
    assert OperatorConfig.from_environment({}) == OperatorConfig()


def test_each_field_is_read_from_its_variable() -> None:
    config = OperatorConfig.from_environment(
        {"LBPAIR_PROBE_INTERVAL_SECONDS": "0.5", "LBPAIR_RETRY_SECONDS": "5", "UNRELATED": "x"}
    )

    assert (config.probe_interval_seconds, config.retry_seconds) == (0.5, 5.0)


def test_secret_namespaces_are_a_comma_separated_list() -> None:
    config = OperatorConfig.from_environment({"LBPAIR_SECRET_NAMESPACES": "team-a, team-b,"})

    assert config.secret_namespaces == ("team-a", "team-b")


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({"LBPAIR_COALESCE_SECONDS": "soon"}, "LBPAIR_COALESCE_SECONDS='soon' is not a number"),
        ({"LBPAIR_PROBE_INTERVAL_SECONDS": "0"}, "LBPAIR_PROBE_INTERVAL_SECONDS='0' must be a positive"),
        ({"LBPAIR_VERIFY_TIMEOUT_SECONDS": "nan"}, "LBPAIR_VERIFY_TIMEOUT_SECONDS='nan' must be a positive"),
        ({"LBPAIR_MAX_RETRY_SECONDS": "10"}, "LBPAIR_MAX_RETRY_SECONDS (10) must not be below"),
        ({"LBPAIR_COALESCE_SECONDS": "5"}, "LBPAIR_COALESCE_MAX_SECONDS (3) must not be below"),
        ({"LBPAIR_SECRET_NAMESPACES": "a,B_b"}, "LBPAIR_SECRET_NAMESPACES='a,B_b': 'B_b' is not a namespace"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(environment: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
        OperatorConfig.from_environment(environment)


def test_metrics_port_is_a_port_number_and_zero_turns_the_endpoint_off() -> None:
    assert OperatorConfig.from_environment({"LBPAIR_METRICS_PORT": "9191"}).metrics_port == 9191
    assert OperatorConfig.from_environment({"LBPAIR_METRICS_PORT": "0"}).metrics_port == 0
    with pytest.raises(ConfigError, match="LBPAIR_METRICS_PORT='http' is not a port number"):
        OperatorConfig.from_environment({"LBPAIR_METRICS_PORT": "http"})
    with pytest.raises(ConfigError, match="LBPAIR_METRICS_PORT='70000' must be a port from 1 to 65535"):
        OperatorConfig.from_environment({"LBPAIR_METRICS_PORT": "70000"})


def test_pass_threads_is_a_bounded_count_of_threads() -> None:
    assert OperatorConfig().pass_threads >= 10  # issue 9: ten pairs on one operator run at once
    assert OperatorConfig.from_environment({"LBPAIR_PASS_THREADS": "64"}).pass_threads == 64
    with pytest.raises(ConfigError, match="LBPAIR_PASS_THREADS='many' is not a number of threads"):
        OperatorConfig.from_environment({"LBPAIR_PASS_THREADS": "many"})
    for text in ("0", "1025"):
        with pytest.raises(ConfigError, match=f"LBPAIR_PASS_THREADS='{text}' must be from 1 to 1024 threads"):
            OperatorConfig.from_environment({"LBPAIR_PASS_THREADS": text})
