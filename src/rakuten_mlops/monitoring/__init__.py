"""Monitoring: drift of what the API sees against the production model's training data, live
accuracy on newly loaded labelled batches, and the retrain decision that combines them."""

#: Drift severities, mildest first; the level is what ``rakuten_drift_severity`` reports.
SEVERITIES = ("none", "low", "medium", "high")
SEVERITY_LEVEL = {name: level for level, name in enumerate(SEVERITIES)}
