"""Evaluation metrics for attribution maps."""
