"""The institution side: local data, trainers, and the Client that answers tasks."""
