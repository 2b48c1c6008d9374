"""Kubernetes operator that rolls the serving Deployment to the model version behind an MLflow alias.

Importable as ``rakuten_operator`` (never ``operator``: that would shadow the standard
library's ``operator`` module). Kopf handlers live in :mod:`rakuten_operator.handlers`;
the decisions they take are plain functions in :mod:`rakuten_operator.rollout`.
"""

GROUP = "mlops.rakuten.io"
VERSION = "v1alpha1"
PLURAL = "servedmodels"
KIND = "ServedModel"

#: Pod-template annotation and container env var that pin the served model version.
VERSION_ANNOTATION = "mlops.rakuten.io/model-version"
VERSION_ENV = "RAKUTEN_MODEL_VERSION"

#: Model version tag written when a rollout of that version failed and was rolled back.
FAILURE_TAG = "rollout_failure_reason"

#: Name of the KopfPeering object that keeps one operator instance active.
PEERING_NAME = "rakuten-mlops"
