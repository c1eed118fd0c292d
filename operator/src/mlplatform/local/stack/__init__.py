"""The MLflow stack of the local platform: PostgreSQL, MinIO and the MLflow tracking server."""

from mlplatform.local.stack.part import MlflowStack, StackEndpoints, endpoints, start_service, stop_service

__all__ = ["MlflowStack", "StackEndpoints", "endpoints", "start_service", "stop_service"]
