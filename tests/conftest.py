"""Fixtures shared by every test layer; the e2e ones always tear down what they started."""

pytest_plugins = ["tests.e2e.cluster_fixtures", "tests.e2e.lab_fixtures"]
