"""lbpair: a Kubernetes operator for a bare-metal nginx + keepalived load-balancer pair."""
