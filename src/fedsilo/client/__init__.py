"""The institution side: trainers, site policy, and the Client that answers tasks."""
