"""Coordinator: node registry, two-phase scheduler, OpenAI gateway and dashboard."""
