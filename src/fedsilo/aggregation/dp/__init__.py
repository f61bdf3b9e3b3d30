"""Differential privacy as aggregation layers: clipping, central and distributed Gaussian
noise, and the privacy accountant (dp-accounting)."""
