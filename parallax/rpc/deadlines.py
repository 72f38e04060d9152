"""Named deadlines for every RPC, in seconds. One place to tune them."""

SUBMIT_S = 5.0  # gateway -> first node: enqueue a request
FORWARD_S = 10.0  # node -> next node: enqueue one batch of hidden states
PUSH_TOKENS_S = 5.0  # last node -> first node: sampled tokens
DELIVER_S = 5.0  # last node -> gateway: token stream
RELEASE_S = 5.0  # free KV on a node (abort/finish)
HEALTH_S = 2.0  # liveness and load probe
JOIN_CHALLENGE_S = 5.0  # node -> coordinator: a nonce to answer in the join
JOIN_S = 10.0  # node -> coordinator: join
HEARTBEAT_S = 5.0  # node -> coordinator: heartbeat
LEAVE_S = 5.0  # node -> coordinator: leave
WEIGHT_MANIFEST_S = 120.0  # node -> coordinator: the weight manifest (hashed once, at first ask)
WEIGHT_FETCH_S = 60.0  # node -> source: one Fetch of at most 16 chunks of 1 MiB
