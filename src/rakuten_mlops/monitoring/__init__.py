"""Monitoring: drift of what the API sees against the production model's training data, live
accuracy on newly loaded labelled batches, and the retrain decision that combines them."""
