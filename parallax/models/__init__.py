"""Model specs and model-name resolution (torch-free)."""
