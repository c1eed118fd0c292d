"""MLPlatform Operator: a Kubernetes-native MLflow platform."""

__version__ = "0.1.0"
