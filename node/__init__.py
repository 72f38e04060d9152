"""Node: the shard server and its engine. Runs a layer range of one model."""
