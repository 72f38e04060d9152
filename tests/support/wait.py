"""Polling until a condition holds: one helper for plain tests, one for asyncio tests."""

from __future__ import annotations

import asyncio
import time

import pytest


def wait_until(check, timeout: float = 5.0, what: str = "the condition", poll_s: float = 0.1):
    """Poll `check` until it returns something truthy and return that; fail the test
    after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


async def wait_for(check, timeout: float = 5.0, what: str = "the condition") -> None:
    """`wait_until` for a test running in an event loop: sleeps without blocking it."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
