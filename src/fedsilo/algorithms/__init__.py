"""Strategies assembled from parts: sampler, client work, aggregator, server optimizer."""
