"""Training, evaluation, MLflow tracking, the promotion gate and rollback.

Heavy imports stay in the submodules: ``rakuten_mlops.training.train.run_training`` and
``rakuten_mlops.training.registry.{promote, rollback, list_versions}``.
"""
