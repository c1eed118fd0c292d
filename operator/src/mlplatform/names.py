"""Every name the platform's objects share, defined once: API group, labels, annotations, run tags, env.

The operator writes them, the builders put them on manifests, and the tests read them from here.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "mlplatform.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
TRAININGRUN_KIND: Final = "TrainingRun"
TRAININGRUN_PLURAL: Final = "trainingruns"
MODELDEPLOYMENT_KIND: Final = "ModelDeployment"
MODELDEPLOYMENT_PLURAL: Final = "modeldeployments"

# kopf's bookkeeping, under our own domain rather than kopf's.
FINALIZER: Final = f"{GROUP}/finalizer"
ANNOTATION_PREFIX: Final = GROUP
LAST_HANDLED_ANNOTATION: Final = f"{GROUP}/last-handled-configuration"

# Labels on everything the operator creates (app.kubernetes.io/* plus our own selector labels).
LABEL_TRAININGRUN: Final = f"{GROUP}/trainingrun"
LABEL_MODELDEPLOYMENT: Final = f"{GROUP}/modeldeployment"
LABEL_MODEL_VERSION: Final = f"{GROUP}/model-version"  # on serving pods: the version they serve
ANNOTATION_MODEL_URI: Final = f"{GROUP}/model-uri"  # on serving pods: models:/<name>/<version>
ANNOTATION_SERVER_DIGEST: Final = f"{GROUP}/server-digest"  # on serving pods: the model server's source
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "mlplatform-operator"

# Tags the operator writes on the MLflow runs of TrainingRuns: they link a run to its object.
TAG_NAMESPACE: Final = f"{GROUP}/namespace"
TAG_NAME: Final = f"{GROUP}/name"
TAG_UID: Final = f"{GROUP}/uid"
TAG_IMAGE: Final = f"{GROUP}/image"
TAG_FAILURE: Final = f"{GROUP}/failure"  # why the run failed, as its TrainingRun's condition says
TAG_MLFLOW_RUN_NAME: Final = "mlflow.runName"
TAG_MLFLOW_SOURCE_NAME: Final = "mlflow.source.name"
TAG_MLFLOW_SOURCE_TYPE: Final = "mlflow.source.type"

# The trainer contract (trainer_images/README.md): what a trainer pod receives.
ENV_TRACKING_URI: Final = "MLFLOW_TRACKING_URI"
ENV_EXPERIMENT_NAME: Final = "MLFLOW_EXPERIMENT_NAME"
ENV_EXPERIMENT_ID: Final = "MLFLOW_EXPERIMENT_ID"  # not set (MLflow refuses it beside the name), but reserved
ENV_RUN_ID: Final = "MLFLOW_RUN_ID"
ENV_PARAMETERS: Final = "MLPLATFORM_PARAMETERS"
OPERATOR_ENV: Final = (ENV_TRACKING_URI, ENV_EXPERIMENT_NAME, ENV_EXPERIMENT_ID, ENV_RUN_ID, ENV_PARAMETERS)

# Git credentials reach the clone container from the user's Secret, by these names.
ENV_GIT_USERNAME: Final = "GIT_USERNAME"
ENV_GIT_PASSWORD: Final = "GIT_PASSWORD"  # noqa: S105 - the variable's name, not a password
