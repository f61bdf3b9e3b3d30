"""Institution data: schema, CSV loading, partitioners, federated preprocessing, LocalData."""
