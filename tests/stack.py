"""The session cluster's MLflow stack as the tests see it: endpoints, credentials, direct clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
import psycopg2
import requests

from mlplatform.local.config import LocalConfig
from mlplatform.local.stack import StackEndpoints
from mlplatform.local.stack.credentials import StackCredentials


@dataclass(frozen=True)
class Stack:
    config: LocalConfig
    endpoints: StackEndpoints
    credentials: StackCredentials

    @property
    def tracking_uri(self) -> str:
        return self.endpoints.tracking_uri

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call MLflow's REST API directly (as the operator does), not through a client library."""
        return requests.request(method, f"{self.tracking_uri}/api/2.0/mlflow/{path}", timeout=30, **kwargs)

    def database(self) -> Any:
        """A psycopg2 connection to the tracking database, as the MLflow role."""
        return psycopg2.connect(
            host=self.endpoints.postgres_host,
            port=self.endpoints.postgres_port,
            dbname=self.endpoints.database,
            user=self.endpoints.database_user,
            password=self.credentials.postgres_password,
            connect_timeout=5,
        )

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with self.database() as connection, connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows: list[tuple[Any, ...]] = cursor.fetchall()
        connection.close()
        return rows

    def trainer_env(self, experiment: str, **extra: str) -> dict[str, str]:
        """The documented environment of a trainer (trainer_images/README.md), nothing else."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "MLFLOW_EXPERIMENT_NAME": experiment, **extra}

    def s3(self) -> Any:
        """A boto3 client for MinIO itself, with the stack's root credentials."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoints.s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.credentials.minio_user,
            aws_secret_access_key=self.credentials.minio_password,
        )
