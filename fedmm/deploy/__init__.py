"""Deployment helpers: TLS certificates, SuperNode keys, Flower process command lines."""
