"""The local platform: a real Kubernetes control plane, a local node and the MLflow stack on one machine."""
