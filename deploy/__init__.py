"""Deployment tools that are not part of the shipped package (deploy/testbed)."""
