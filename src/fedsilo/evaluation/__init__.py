"""Metrics, the local-only / federated / pooled comparison, and plots."""
