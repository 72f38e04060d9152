"""Weights that travel peer to peer: manifest, cache and the Weights service (torch-free)."""
