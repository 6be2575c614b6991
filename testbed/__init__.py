"""Test lab for lbpair-operator: network namespaces that behave like two LB servers, backends and a client."""
