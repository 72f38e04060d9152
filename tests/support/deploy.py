"""What the packaging and testbed tests check in more than one file."""

from __future__ import annotations

from deploy.testbed.netns import namespaces, sh

# What each side must never install (the other side's dependencies, build tools).
NOT_ON_NODE = {"ortools", "fastapi", "uvicorn", "grpcio-tools", "openai"}
NOT_ON_COORDINATOR = {"torch", "safetensors", "grpcio-tools"}


def leftovers(prefix: str) -> list[str]:
    """Namespaces, root-namespace links and qdiscs that carry `prefix` in their name."""
    found = [ns for ns in namespaces() if ns.startswith(prefix)]
    found += [ln for ln in sh("ip", "-o", "link", "show").splitlines() if prefix in ln]
    found += [q for q in sh("tc", "qdisc", "show").splitlines() if prefix in q]
    return found
