from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Failure(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_NONE: _ClassVar[Failure]
    FAILURE_KV_FULL: _ClassVar[Failure]
    FAILURE_OVERLOADED: _ClassVar[Failure]
    FAILURE_UNREACHABLE: _ClassVar[Failure]
    FAILURE_REASSIGNED: _ClassVar[Failure]
    FAILURE_DRAINING: _ClassVar[Failure]
    FAILURE_INVALID: _ClassVar[Failure]
    FAILURE_INTERNAL: _ClassVar[Failure]
FAILURE_NONE: Failure
FAILURE_KV_FULL: Failure
FAILURE_OVERLOADED: Failure
FAILURE_UNREACHABLE: Failure
FAILURE_REASSIGNED: Failure
FAILURE_DRAINING: Failure
FAILURE_INVALID: Failure
FAILURE_INTERNAL: Failure

class Tensor(_message.Message):
    __slots__ = ("data", "dtype", "shape")
    DATA_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, data: _Optional[bytes] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k", "min_p", "has_seed", "seed", "repetition_penalty", "presence_penalty", "frequency_penalty", "stop_token_ids", "max_tokens", "min_tokens", "ignore_eos", "logprobs", "logit_bias", "grammar")
    class LogitBiasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MIN_P_FIELD_NUMBER: _ClassVar[int]
    HAS_SEED_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_PENALTY_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_PENALTY_FIELD_NUMBER: _ClassVar[int]
    STOP_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    LOGIT_BIAS_FIELD_NUMBER: _ClassVar[int]
    GRAMMAR_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    has_seed: bool
    seed: int
    repetition_penalty: float
    presence_penalty: float
    frequency_penalty: float
    stop_token_ids: _containers.RepeatedScalarFieldContainer[int]
    max_tokens: int
    min_tokens: int
    ignore_eos: bool
    logprobs: int
    logit_bias: _containers.ScalarMap[int, float]
    grammar: Grammar
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., min_p: _Optional[float] = ..., has_seed: _Optional[bool] = ..., seed: _Optional[int] = ..., repetition_penalty: _Optional[float] = ..., presence_penalty: _Optional[float] = ..., frequency_penalty: _Optional[float] = ..., stop_token_ids: _Optional[_Iterable[int]] = ..., max_tokens: _Optional[int] = ..., min_tokens: _Optional[int] = ..., ignore_eos: _Optional[bool] = ..., logprobs: _Optional[int] = ..., logit_bias: _Optional[_Mapping[int, float]] = ..., grammar: _Optional[_Union[Grammar, _Mapping]] = ...) -> None: ...

class Grammar(_message.Message):
    __slots__ = ("kind", "text")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    text: str
    def __init__(self, kind: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class Hop(_message.Message):
    __slots__ = ("node_id", "address", "start", "end")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    start: int
    end: int
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("hops",)
    HOPS_FIELD_NUMBER: _ClassVar[int]
    hops: _containers.RepeatedCompositeFieldContainer[Hop]
    def __init__(self, hops: _Optional[_Iterable[_Union[Hop, _Mapping]]] = ...) -> None: ...

class RouteGrant(_message.Message):
    __slots__ = ("request_id", "hops", "reply_to", "sampling_sha256", "expires_at")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_SHA256_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    hops: _containers.RepeatedCompositeFieldContainer[Hop]
    reply_to: str
    sampling_sha256: bytes
    expires_at: float
    def __init__(self, request_id: _Optional[str] = ..., hops: _Optional[_Iterable[_Union[Hop, _Mapping]]] = ..., reply_to: _Optional[str] = ..., sampling_sha256: _Optional[bytes] = ..., expires_at: _Optional[float] = ...) -> None: ...

class Capability(_message.Message):
    __slots__ = ("grant", "signature")
    GRANT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    grant: bytes
    signature: bytes
    def __init__(self, grant: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("request_id", "prompt_ids", "sampling", "route", "reply_to", "generated_offset", "capability")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    GENERATED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    prompt_ids: _containers.RepeatedScalarFieldContainer[int]
    sampling: SamplingParams
    route: Route
    reply_to: str
    generated_offset: int
    capability: Capability
    def __init__(self, request_id: _Optional[str] = ..., prompt_ids: _Optional[_Iterable[int]] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., route: _Optional[_Union[Route, _Mapping]] = ..., reply_to: _Optional[str] = ..., generated_offset: _Optional[int] = ..., capability: _Optional[_Union[Capability, _Mapping]] = ...) -> None: ...

class SeqChunk(_message.Message):
    __slots__ = ("request_id", "start_pos", "num_tokens", "sample", "request", "grant_signature")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    START_POS_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    GRANT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    start_pos: int
    num_tokens: int
    sample: bool
    request: SubmitRequest
    grant_signature: bytes
    def __init__(self, request_id: _Optional[str] = ..., start_pos: _Optional[int] = ..., num_tokens: _Optional[int] = ..., sample: _Optional[bool] = ..., request: _Optional[_Union[SubmitRequest, _Mapping]] = ..., grant_signature: _Optional[bytes] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("chunks", "hidden", "sender_id")
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[SeqChunk]
    hidden: Tensor
    sender_id: str
    def __init__(self, chunks: _Optional[_Iterable[_Union[SeqChunk, _Mapping]]] = ..., hidden: _Optional[_Union[Tensor, _Mapping]] = ..., sender_id: _Optional[str] = ...) -> None: ...

class TopLogprob(_message.Message):
    __slots__ = ("token_id", "logprob")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    token_id: int
    logprob: float
    def __init__(self, token_id: _Optional[int] = ..., logprob: _Optional[float] = ...) -> None: ...

class TokenEvent(_message.Message):
    __slots__ = ("request_id", "token_id", "finished", "finish_reason", "logprob", "top_logprobs", "error", "index", "failure", "grant_signature", "mac", "unreachable_hop")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    TOP_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    GRANT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_HOP_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    token_id: int
    finished: bool
    finish_reason: str
    logprob: float
    top_logprobs: _containers.RepeatedCompositeFieldContainer[TopLogprob]
    error: str
    index: int
    failure: Failure
    grant_signature: bytes
    mac: bytes
    unreachable_hop: str
    def __init__(self, request_id: _Optional[str] = ..., token_id: _Optional[int] = ..., finished: _Optional[bool] = ..., finish_reason: _Optional[str] = ..., logprob: _Optional[float] = ..., top_logprobs: _Optional[_Iterable[_Union[TopLogprob, _Mapping]]] = ..., error: _Optional[str] = ..., index: _Optional[int] = ..., failure: _Optional[_Union[Failure, str]] = ..., grant_signature: _Optional[bytes] = ..., mac: _Optional[bytes] = ..., unreachable_hop: _Optional[str] = ...) -> None: ...

class TokenBatch(_message.Message):
    __slots__ = ("events", "sender_id")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[TokenEvent]
    sender_id: str
    def __init__(self, events: _Optional[_Iterable[_Union[TokenEvent, _Mapping]]] = ..., sender_id: _Optional[str] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("request_ids", "reason", "kv_only", "grant_signatures")
    class KvOnlyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class GrantSignaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    KV_ONLY_FIELD_NUMBER: _ClassVar[int]
    GRANT_SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    request_ids: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    kv_only: _containers.ScalarMap[str, int]
    grant_signatures: _containers.ScalarMap[str, bytes]
    def __init__(self, request_ids: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., kv_only: _Optional[_Mapping[str, int]] = ..., grant_signatures: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("ok", "message")
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    message: str
    def __init__(self, ok: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "name", "state", "start", "end", "running_requests", "kv_free_tokens", "kv_total_tokens", "layer_latency_ms", "tokens_per_s", "model", "max_running", "kv_block_tokens")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    RUNNING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    KV_FREE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    KV_TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LAYER_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    name: str
    state: str
    start: int
    end: int
    running_requests: int
    kv_free_tokens: int
    kv_total_tokens: int
    layer_latency_ms: float
    tokens_per_s: float
    model: str
    max_running: int
    kv_block_tokens: int
    def __init__(self, node_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., running_requests: _Optional[int] = ..., kv_free_tokens: _Optional[int] = ..., kv_total_tokens: _Optional[int] = ..., layer_latency_ms: _Optional[float] = ..., tokens_per_s: _Optional[float] = ..., model: _Optional[str] = ..., max_running: _Optional[int] = ..., kv_block_tokens: _Optional[int] = ...) -> None: ...

class Hardware(_message.Message):
    __slots__ = ("device", "device_name", "flops", "mem_bandwidth", "memory_bytes")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    MEM_BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    device: str
    device_name: str
    flops: float
    mem_bandwidth: float
    memory_bytes: float
    def __init__(self, device: _Optional[str] = ..., device_name: _Optional[str] = ..., flops: _Optional[float] = ..., mem_bandwidth: _Optional[float] = ..., memory_bytes: _Optional[float] = ...) -> None: ...

class NodeProof(_message.Message):
    __slots__ = ("counter", "mac")
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    counter: int
    mac: bytes
    def __init__(self, counter: _Optional[int] = ..., mac: _Optional[bytes] = ...) -> None: ...

class JoinChallengeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JoinChallengeReply(_message.Message):
    __slots__ = ("nonce", "expires_in_s")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    expires_in_s: float
    def __init__(self, nonce: _Optional[bytes] = ..., expires_in_s: _Optional[float] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("name", "address", "hardware", "model", "metrics_address", "nonce", "token_proof", "previous_node_id", "previous_proof", "model_parts", "format")
    class ModelPartsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_PROOF_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PROOF_FIELD_NUMBER: _ClassVar[int]
    MODEL_PARTS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    hardware: Hardware
    model: str
    metrics_address: str
    nonce: bytes
    token_proof: bytes
    previous_node_id: str
    previous_proof: NodeProof
    model_parts: _containers.ScalarMap[str, str]
    format: ModelFormat
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., hardware: _Optional[_Union[Hardware, _Mapping]] = ..., model: _Optional[str] = ..., metrics_address: _Optional[str] = ..., nonce: _Optional[bytes] = ..., token_proof: _Optional[bytes] = ..., previous_node_id: _Optional[str] = ..., previous_proof: _Optional[_Union[NodeProof, _Mapping]] = ..., model_parts: _Optional[_Mapping[str, str]] = ..., format: _Optional[_Union[ModelFormat, _Mapping]] = ...) -> None: ...

class ModelFormat(_message.Message):
    __slots__ = ("dtype", "weights", "layer_bytes", "kv_bytes_per_token", "embedding_bytes", "head_bytes")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    LAYER_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_BYTES_FIELD_NUMBER: _ClassVar[int]
    HEAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    weights: str
    layer_bytes: float
    kv_bytes_per_token: float
    embedding_bytes: float
    head_bytes: float
    def __init__(self, dtype: _Optional[str] = ..., weights: _Optional[str] = ..., layer_bytes: _Optional[float] = ..., kv_bytes_per_token: _Optional[float] = ..., embedding_bytes: _Optional[float] = ..., head_bytes: _Optional[float] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("model", "start", "end", "standby", "epoch")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STANDBY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    model: str
    start: int
    end: int
    standby: bool
    epoch: int
    def __init__(self, model: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., standby: _Optional[bool] = ..., epoch: _Optional[int] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("node_id", "assignment", "heartbeat_interval_s", "node_secret", "route_key", "model_digest", "model_parts")
    class ModelPartsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    NODE_SECRET_FIELD_NUMBER: _ClassVar[int]
    ROUTE_KEY_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MODEL_PARTS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    assignment: Assignment
    heartbeat_interval_s: float
    node_secret: bytes
    route_key: bytes
    model_digest: str
    model_parts: _containers.ScalarMap[str, str]
    def __init__(self, node_id: _Optional[str] = ..., assignment: _Optional[_Union[Assignment, _Mapping]] = ..., heartbeat_interval_s: _Optional[float] = ..., node_secret: _Optional[bytes] = ..., route_key: _Optional[bytes] = ..., model_digest: _Optional[str] = ..., model_parts: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PeerRtt(_message.Message):
    __slots__ = ("node_id", "rtt_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    rtt_ms: float
    def __init__(self, node_id: _Optional[str] = ..., rtt_ms: _Optional[float] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "status", "rtts", "proof")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RTTS_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    status: NodeStatus
    rtts: _containers.RepeatedCompositeFieldContainer[PeerRtt]
    proof: NodeProof
    def __init__(self, node_id: _Optional[str] = ..., status: _Optional[_Union[NodeStatus, _Mapping]] = ..., rtts: _Optional[_Iterable[_Union[PeerRtt, _Mapping]]] = ..., proof: _Optional[_Union[NodeProof, _Mapping]] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("assignment", "peers", "unknown_node")
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_NODE_FIELD_NUMBER: _ClassVar[int]
    assignment: Assignment
    peers: _containers.RepeatedCompositeFieldContainer[Hop]
    unknown_node: bool
    def __init__(self, assignment: _Optional[_Union[Assignment, _Mapping]] = ..., peers: _Optional[_Iterable[_Union[Hop, _Mapping]]] = ..., unknown_node: _Optional[bool] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("node_id", "proof")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    proof: NodeProof
    def __init__(self, node_id: _Optional[str] = ..., proof: _Optional[_Union[NodeProof, _Mapping]] = ...) -> None: ...

class WeightManifestRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WeightRegion(_message.Message):
    __slots__ = ("name", "offset", "nbytes", "chunk_sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    offset: int
    nbytes: int
    chunk_sha256: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, name: _Optional[str] = ..., offset: _Optional[int] = ..., nbytes: _Optional[int] = ..., chunk_sha256: _Optional[_Iterable[bytes]] = ...) -> None: ...

class WeightManifest(_message.Message):
    __slots__ = ("model_digest", "format", "file_bytes", "chunk_bytes", "regions", "sources")
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    FILE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    model_digest: str
    format: str
    file_bytes: int
    chunk_bytes: int
    regions: _containers.RepeatedCompositeFieldContainer[WeightRegion]
    sources: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_digest: _Optional[str] = ..., format: _Optional[str] = ..., file_bytes: _Optional[int] = ..., chunk_bytes: _Optional[int] = ..., regions: _Optional[_Iterable[_Union[WeightRegion, _Mapping]]] = ..., sources: _Optional[_Iterable[str]] = ...) -> None: ...

class WeightFetchRequest(_message.Message):
    __slots__ = ("model_digest", "region", "first_chunk", "count")
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    FIRST_CHUNK_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    model_digest: str
    region: str
    first_chunk: int
    count: int
    def __init__(self, model_digest: _Optional[str] = ..., region: _Optional[str] = ..., first_chunk: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class WeightChunk(_message.Message):
    __slots__ = ("index", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    data: bytes
    def __init__(self, index: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...
