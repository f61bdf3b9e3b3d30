"""Federated gradient-boosted trees on XGBoost's own federated engine (the `xgboost` extra)."""
