"""A testbed of unequal hosts on one machine: `python -m deploy.testbed --help`."""

from deploy.testbed.bed import Testbed
from deploy.testbed.config import TestbedConfig
from deploy.testbed.netns import TestbedError

__all__ = ["Testbed", "TestbedConfig", "TestbedError"]
