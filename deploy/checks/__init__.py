"""Offline checks of the Kubernetes manifests in deploy/ (run by deploy/check.py)."""
