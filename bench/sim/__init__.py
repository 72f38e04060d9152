"""Discrete-event simulator of a cluster, the baselines it compares, and the hardware catalog."""
