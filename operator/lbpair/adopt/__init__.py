"""Adopt a hand-built nginx + keepalived pair: read its nodes' configuration and print the equivalent
LoadBalancerPair, Upstream and VirtualHost manifests (`python -m lbpair.adopt`, see __main__.py).

keepalived_conf / nginx_conf parse (the latter with crossplane), keepalived_map / nginx_http /
nginx_servers map what was parsed onto the API's fields, manifests validates the result with the model;
node_files is the only part that talks to a node (through nodes.client's NodeClient).
"""
