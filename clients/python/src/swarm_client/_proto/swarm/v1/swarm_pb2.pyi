import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    APPROVE: _ClassVar[Decision]
    REJECT: _ClassVar[Decision]

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_PENDING: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_SUCCEEDED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
    RUN_STATE_CANCELLED: _ClassVar[RunState]
    RUN_STATE_BUDGET_EXCEEDED: _ClassVar[RunState]

class SubtaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBTASK_STATE_UNSPECIFIED: _ClassVar[SubtaskState]
    SUBTASK_STATE_BLOCKED: _ClassVar[SubtaskState]
    SUBTASK_STATE_READY: _ClassVar[SubtaskState]
    SUBTASK_STATE_RUNNING: _ClassVar[SubtaskState]
    SUBTASK_STATE_BACKOFF: _ClassVar[SubtaskState]
    SUBTASK_STATE_SUCCEEDED: _ClassVar[SubtaskState]
    SUBTASK_STATE_FAILED: _ClassVar[SubtaskState]
    SUBTASK_STATE_SKIPPED: _ClassVar[SubtaskState]
    SUBTASK_STATE_CANCELLED: _ClassVar[SubtaskState]
    SUBTASK_STATE_WAITING: _ClassVar[SubtaskState]

class FailureKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_KIND_UNSPECIFIED: _ClassVar[FailureKind]
    FAILURE_KIND_TRANSIENT: _ClassVar[FailureKind]
    FAILURE_KIND_PERMANENT: _ClassVar[FailureKind]
    FAILURE_KIND_TIMEOUT: _ClassVar[FailureKind]
    FAILURE_KIND_CANCELLED: _ClassVar[FailureKind]
    FAILURE_KIND_WORKER_LOST: _ClassVar[FailureKind]
    FAILURE_KIND_TOOL_REPORTED: _ClassVar[FailureKind]
    FAILURE_KIND_INTERNAL: _ClassVar[FailureKind]
DECISION_UNSPECIFIED: Decision
APPROVE: Decision
REJECT: Decision
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_PENDING: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_SUCCEEDED: RunState
RUN_STATE_FAILED: RunState
RUN_STATE_CANCELLED: RunState
RUN_STATE_BUDGET_EXCEEDED: RunState
SUBTASK_STATE_UNSPECIFIED: SubtaskState
SUBTASK_STATE_BLOCKED: SubtaskState
SUBTASK_STATE_READY: SubtaskState
SUBTASK_STATE_RUNNING: SubtaskState
SUBTASK_STATE_BACKOFF: SubtaskState
SUBTASK_STATE_SUCCEEDED: SubtaskState
SUBTASK_STATE_FAILED: SubtaskState
SUBTASK_STATE_SKIPPED: SubtaskState
SUBTASK_STATE_CANCELLED: SubtaskState
SUBTASK_STATE_WAITING: SubtaskState
FAILURE_KIND_UNSPECIFIED: FailureKind
FAILURE_KIND_TRANSIENT: FailureKind
FAILURE_KIND_PERMANENT: FailureKind
FAILURE_KIND_TIMEOUT: FailureKind
FAILURE_KIND_CANCELLED: FailureKind
FAILURE_KIND_WORKER_LOST: FailureKind
FAILURE_KIND_TOOL_REPORTED: FailureKind
FAILURE_KIND_INTERNAL: FailureKind

class ForkRunRequest(_message.Message):
    __slots__ = ("run_id", "from_subtask", "patch", "from_step", "idempotency_key")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_SUBTASK_FIELD_NUMBER: _ClassVar[int]
    PATCH_FIELD_NUMBER: _ClassVar[int]
    FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    from_subtask: str
    patch: str
    from_step: int
    idempotency_key: str
    def __init__(self, run_id: _Optional[str] = ..., from_subtask: _Optional[str] = ..., patch: _Optional[str] = ..., from_step: _Optional[int] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ForkRunResponse(_message.Message):
    __slots__ = ("run_id", "reused", "rerun", "created")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    RERUN_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    reused: int
    rerun: int
    created: bool
    def __init__(self, run_id: _Optional[str] = ..., reused: _Optional[int] = ..., rerun: _Optional[int] = ..., created: _Optional[bool] = ...) -> None: ...

class GetTranscriptRequest(_message.Message):
    __slots__ = ("run_id", "subtask_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    subtask_id: str
    def __init__(self, run_id: _Optional[str] = ..., subtask_id: _Optional[str] = ...) -> None: ...

class GetTranscriptResponse(_message.Message):
    __slots__ = ("turns_json", "agent_json")
    TURNS_JSON_FIELD_NUMBER: _ClassVar[int]
    AGENT_JSON_FIELD_NUMBER: _ClassVar[int]
    turns_json: str
    agent_json: str
    def __init__(self, turns_json: _Optional[str] = ..., agent_json: _Optional[str] = ...) -> None: ...

class SignalRunRequest(_message.Message):
    __slots__ = ("run_id", "subtask_id", "decision", "payload_json", "reason")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    subtask_id: str
    decision: Decision
    payload_json: str
    reason: str
    def __init__(self, run_id: _Optional[str] = ..., subtask_id: _Optional[str] = ..., decision: _Optional[_Union[Decision, str]] = ..., payload_json: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SignalRunResponse(_message.Message):
    __slots__ = ("decision", "already_decided", "payload_json", "reason")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    ALREADY_DECIDED_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    already_decided: bool
    payload_json: str
    reason: str
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., already_decided: _Optional[bool] = ..., payload_json: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ApprovalSpec(_message.Message):
    __slots__ = ("prompt", "timeout", "on_timeout")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    ON_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    timeout: _duration_pb2.Duration
    on_timeout: Decision
    def __init__(self, prompt: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., on_timeout: _Optional[_Union[Decision, str]] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ...) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "slots", "running", "tools", "labels", "last_heard", "connected_at", "draining")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARD_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    slots: int
    running: int
    tools: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    last_heard: _timestamp_pb2.Timestamp
    connected_at: _timestamp_pb2.Timestamp
    draining: bool
    def __init__(self, worker_id: _Optional[str] = ..., slots: _Optional[int] = ..., running: _Optional[int] = ..., tools: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., last_heard: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., connected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., draining: _Optional[bool] = ...) -> None: ...

class RunSpec(_message.Message):
    __slots__ = ("name", "subtasks", "limits", "speculation", "retry", "tool_retry", "max_concurrency", "schedule_to_start_ms", "priority", "version")
    class ToolRetryEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: RetryPolicy
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[RetryPolicy, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUBTASKS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    SPECULATION_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    TOOL_RETRY_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_TO_START_MS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    subtasks: _containers.RepeatedCompositeFieldContainer[SubtaskSpec]
    limits: RunLimits
    speculation: Speculation
    retry: RetryPolicy
    tool_retry: _containers.MessageMap[str, RetryPolicy]
    max_concurrency: int
    schedule_to_start_ms: int
    priority: int
    version: str
    def __init__(self, name: _Optional[str] = ..., subtasks: _Optional[_Iterable[_Union[SubtaskSpec, _Mapping]]] = ..., limits: _Optional[_Union[RunLimits, _Mapping]] = ..., speculation: _Optional[_Union[Speculation, _Mapping]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., tool_retry: _Optional[_Mapping[str, RetryPolicy]] = ..., max_concurrency: _Optional[int] = ..., schedule_to_start_ms: _Optional[int] = ..., priority: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("initial_interval", "backoff_coefficient", "maximum_interval", "maximum_attempts", "jitter", "non_retryable")
    INITIAL_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_COEFFICIENT_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    JITTER_FIELD_NUMBER: _ClassVar[int]
    NON_RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    initial_interval: _duration_pb2.Duration
    backoff_coefficient: float
    maximum_interval: _duration_pb2.Duration
    maximum_attempts: int
    jitter: float
    non_retryable: _containers.RepeatedScalarFieldContainer[FailureKind]
    def __init__(self, initial_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., backoff_coefficient: _Optional[float] = ..., maximum_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., maximum_attempts: _Optional[int] = ..., jitter: _Optional[float] = ..., non_retryable: _Optional[_Iterable[_Union[FailureKind, str]]] = ...) -> None: ...

class Speculation(_message.Message):
    __slots__ = ("disabled", "quantile", "multiplier", "min_runtime_ms", "max_fraction")
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    MIN_RUNTIME_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_FRACTION_FIELD_NUMBER: _ClassVar[int]
    disabled: bool
    quantile: float
    multiplier: float
    min_runtime_ms: int
    max_fraction: float
    def __init__(self, disabled: _Optional[bool] = ..., quantile: _Optional[float] = ..., multiplier: _Optional[float] = ..., min_runtime_ms: _Optional[int] = ..., max_fraction: _Optional[float] = ...) -> None: ...

class RunLimits(_message.Message):
    __slots__ = ("max_subagents", "max_tool_calls", "orchestrator_max_steps", "subagent_max_steps", "max_tokens")
    MAX_SUBAGENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    ORCHESTRATOR_MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    SUBAGENT_MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    max_subagents: int
    max_tool_calls: int
    orchestrator_max_steps: int
    subagent_max_steps: int
    max_tokens: int
    def __init__(self, max_subagents: _Optional[int] = ..., max_tool_calls: _Optional[int] = ..., orchestrator_max_steps: _Optional[int] = ..., subagent_max_steps: _Optional[int] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class AgentSpec(_message.Message):
    __slots__ = ("instructions", "input", "model", "tools", "max_steps")
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    instructions: str
    input: str
    model: str
    tools: _containers.RepeatedScalarFieldContainer[str]
    max_steps: int
    def __init__(self, instructions: _Optional[str] = ..., input: _Optional[str] = ..., model: _Optional[str] = ..., tools: _Optional[_Iterable[str]] = ..., max_steps: _Optional[int] = ...) -> None: ...

class OrchestratorSpec(_message.Message):
    __slots__ = ("goal", "model", "tools", "max_steps", "subagent_tools", "subagent_models", "subagent_artifacts", "subagent_placement")
    GOAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    SUBAGENT_TOOLS_FIELD_NUMBER: _ClassVar[int]
    SUBAGENT_MODELS_FIELD_NUMBER: _ClassVar[int]
    SUBAGENT_ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    SUBAGENT_PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    goal: str
    model: str
    tools: _containers.RepeatedScalarFieldContainer[str]
    max_steps: int
    subagent_tools: _containers.RepeatedScalarFieldContainer[str]
    subagent_models: _containers.RepeatedScalarFieldContainer[str]
    subagent_artifacts: _containers.RepeatedScalarFieldContainer[str]
    subagent_placement: Placement
    def __init__(self, goal: _Optional[str] = ..., model: _Optional[str] = ..., tools: _Optional[_Iterable[str]] = ..., max_steps: _Optional[int] = ..., subagent_tools: _Optional[_Iterable[str]] = ..., subagent_models: _Optional[_Iterable[str]] = ..., subagent_artifacts: _Optional[_Iterable[str]] = ..., subagent_placement: _Optional[_Union[Placement, _Mapping]] = ...) -> None: ...

class SubtaskSpec(_message.Message):
    __slots__ = ("id", "depends_on", "timeout", "retry", "outputs", "placement", "tool_call", "agent", "orchestrator", "approval")
    ID_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ORCHESTRATOR_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    id: str
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    timeout: _duration_pb2.Duration
    retry: RetryPolicy
    outputs: SubtaskOutputs
    placement: Placement
    tool_call: ToolCall
    agent: AgentSpec
    orchestrator: OrchestratorSpec
    approval: ApprovalSpec
    def __init__(self, id: _Optional[str] = ..., depends_on: _Optional[_Iterable[str]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., outputs: _Optional[_Union[SubtaskOutputs, _Mapping]] = ..., placement: _Optional[_Union[Placement, _Mapping]] = ..., tool_call: _Optional[_Union[ToolCall, _Mapping]] = ..., agent: _Optional[_Union[AgentSpec, _Mapping]] = ..., orchestrator: _Optional[_Union[OrchestratorSpec, _Mapping]] = ..., approval: _Optional[_Union[ApprovalSpec, _Mapping]] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("labels", "avoid", "prefer", "resources")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AvoidEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    AVOID_FIELD_NUMBER: _ClassVar[int]
    PREFER_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.ScalarMap[str, str]
    avoid: _containers.ScalarMap[str, str]
    prefer: _containers.RepeatedCompositeFieldContainer[PlacementPreference]
    resources: _containers.ScalarMap[str, str]
    def __init__(self, labels: _Optional[_Mapping[str, str]] = ..., avoid: _Optional[_Mapping[str, str]] = ..., prefer: _Optional[_Iterable[_Union[PlacementPreference, _Mapping]]] = ..., resources: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PlacementPreference(_message.Message):
    __slots__ = ("labels", "weight")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.ScalarMap[str, str]
    weight: int
    def __init__(self, labels: _Optional[_Mapping[str, str]] = ..., weight: _Optional[int] = ...) -> None: ...

class SubtaskOutputs(_message.Message):
    __slots__ = ("artifacts",)
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, artifacts: _Optional[_Iterable[str]] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("path", "size", "sha256", "key")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    sha256: str
    key: str
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class GetArtifactRequest(_message.Message):
    __slots__ = ("run_id", "subtask_id", "path")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    subtask_id: str
    path: str
    def __init__(self, run_id: _Optional[str] = ..., subtask_id: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("tool", "args_json")
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    tool: str
    args_json: str
    def __init__(self, tool: _Optional[str] = ..., args_json: _Optional[str] = ...) -> None: ...

class SubmitRunRequest(_message.Message):
    __slots__ = ("spec", "idempotency_key", "spec_text")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    SPEC_TEXT_FIELD_NUMBER: _ClassVar[int]
    spec: RunSpec
    idempotency_key: str
    spec_text: str
    def __init__(self, spec: _Optional[_Union[RunSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., spec_text: _Optional[str] = ...) -> None: ...

class SubmitRunChunk(_message.Message):
    __slots__ = ("data", "total_bytes")
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    total_bytes: int
    def __init__(self, data: _Optional[bytes] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class SubmitRunResponse(_message.Message):
    __slots__ = ("run_id", "created")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    created: bool
    def __init__(self, run_id: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id", "include_subtasks", "page_size", "page_token")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SUBTASKS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    include_subtasks: bool
    page_size: int
    page_token: str
    def __init__(self, run_id: _Optional[str] = ..., include_subtasks: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run", "next_page_token")
    RUN_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    next_page_token: str
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "spec_version")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    spec_version: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., spec_version: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelRunRequest(_message.Message):
    __slots__ = ("run_id", "reason")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    reason: str
    def __init__(self, run_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class WatchRunRequest(_message.Message):
    __slots__ = ("run_id", "after_seq", "follow_output", "after_output_seq", "output_epoch", "catch_up_only")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    AFTER_OUTPUT_SEQ_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CATCH_UP_ONLY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    after_seq: int
    follow_output: bool
    after_output_seq: int
    output_epoch: int
    catch_up_only: bool
    def __init__(self, run_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., follow_output: _Optional[bool] = ..., after_output_seq: _Optional[int] = ..., output_epoch: _Optional[int] = ..., catch_up_only: _Optional[bool] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("run_id", "name", "state", "submitted_at", "finished_at", "summary", "last_seq", "subtasks", "tenant", "spec_version", "spec_hash", "forked_from_run", "forked_from_subtask", "forked_from_step")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    SUBTASKS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    SPEC_HASH_FIELD_NUMBER: _ClassVar[int]
    FORKED_FROM_RUN_FIELD_NUMBER: _ClassVar[int]
    FORKED_FROM_SUBTASK_FIELD_NUMBER: _ClassVar[int]
    FORKED_FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    name: str
    state: RunState
    submitted_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    summary: RunSummary
    last_seq: int
    subtasks: _containers.RepeatedCompositeFieldContainer[SubtaskStatus]
    tenant: str
    spec_version: str
    spec_hash: str
    forked_from_run: str
    forked_from_subtask: str
    forked_from_step: int
    def __init__(self, run_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., summary: _Optional[_Union[RunSummary, _Mapping]] = ..., last_seq: _Optional[int] = ..., subtasks: _Optional[_Iterable[_Union[SubtaskStatus, _Mapping]]] = ..., tenant: _Optional[str] = ..., spec_version: _Optional[str] = ..., spec_hash: _Optional[str] = ..., forked_from_run: _Optional[str] = ..., forked_from_subtask: _Optional[str] = ..., forked_from_step: _Optional[int] = ...) -> None: ...

class RunSummary(_message.Message):
    __slots__ = ("total_subtasks", "tool_calls_completed", "tool_calls_failed", "tool_calls_skipped", "attempts", "wall_time", "total_work", "critical_path_time", "critical_path", "critical_steps", "total_steps", "parallelism", "agent_tool_calls", "subagents", "tokens", "speculative_attempts", "speculative_wins", "error_kind", "error_message", "wall_breakdown", "tokens_by_model", "token_budget", "calls_reused", "calls_made", "agent_resumes", "agent_resumes_sticky")
    TOTAL_SUBTASKS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FAILED_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_WORK_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_PATH_TIME_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_PATH_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    PARALLELISM_FIELD_NUMBER: _ClassVar[int]
    AGENT_TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    SUBAGENTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    SPECULATIVE_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SPECULATIVE_WINS_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    WALL_BREAKDOWN_FIELD_NUMBER: _ClassVar[int]
    TOKENS_BY_MODEL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    CALLS_REUSED_FIELD_NUMBER: _ClassVar[int]
    CALLS_MADE_FIELD_NUMBER: _ClassVar[int]
    AGENT_RESUMES_FIELD_NUMBER: _ClassVar[int]
    AGENT_RESUMES_STICKY_FIELD_NUMBER: _ClassVar[int]
    total_subtasks: int
    tool_calls_completed: int
    tool_calls_failed: int
    tool_calls_skipped: int
    attempts: int
    wall_time: _duration_pb2.Duration
    total_work: _duration_pb2.Duration
    critical_path_time: _duration_pb2.Duration
    critical_path: _containers.RepeatedScalarFieldContainer[str]
    critical_steps: int
    total_steps: int
    parallelism: float
    agent_tool_calls: int
    subagents: int
    tokens: int
    speculative_attempts: int
    speculative_wins: int
    error_kind: FailureKind
    error_message: str
    wall_breakdown: WallBreakdown
    tokens_by_model: _containers.RepeatedCompositeFieldContainer[ModelTokens]
    token_budget: int
    calls_reused: int
    calls_made: int
    agent_resumes: int
    agent_resumes_sticky: int
    def __init__(self, total_subtasks: _Optional[int] = ..., tool_calls_completed: _Optional[int] = ..., tool_calls_failed: _Optional[int] = ..., tool_calls_skipped: _Optional[int] = ..., attempts: _Optional[int] = ..., wall_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., total_work: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., critical_path_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., critical_path: _Optional[_Iterable[str]] = ..., critical_steps: _Optional[int] = ..., total_steps: _Optional[int] = ..., parallelism: _Optional[float] = ..., agent_tool_calls: _Optional[int] = ..., subagents: _Optional[int] = ..., tokens: _Optional[int] = ..., speculative_attempts: _Optional[int] = ..., speculative_wins: _Optional[int] = ..., error_kind: _Optional[_Union[FailureKind, str]] = ..., error_message: _Optional[str] = ..., wall_breakdown: _Optional[_Union[WallBreakdown, _Mapping]] = ..., tokens_by_model: _Optional[_Iterable[_Union[ModelTokens, _Mapping]]] = ..., token_budget: _Optional[int] = ..., calls_reused: _Optional[int] = ..., calls_made: _Optional[int] = ..., agent_resumes: _Optional[int] = ..., agent_resumes_sticky: _Optional[int] = ...) -> None: ...

class ModelTokens(_message.Message):
    __slots__ = ("model", "input_tokens", "output_tokens")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    model: str
    input_tokens: int
    output_tokens: int
    def __init__(self, model: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ...) -> None: ...

class WallBreakdown(_message.Message):
    __slots__ = ("work", "waiting_for_slot", "dispatch", "retry_backoff", "failed_attempts", "straggler_wait", "other", "biggest_loss_part", "biggest_loss_subtask", "biggest_loss", "headline", "waiting_for_approval", "waiting_for_placement")
    WORK_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_SLOT_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_FIELD_NUMBER: _ClassVar[int]
    RETRY_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    FAILED_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    STRAGGLER_WAIT_FIELD_NUMBER: _ClassVar[int]
    OTHER_FIELD_NUMBER: _ClassVar[int]
    BIGGEST_LOSS_PART_FIELD_NUMBER: _ClassVar[int]
    BIGGEST_LOSS_SUBTASK_FIELD_NUMBER: _ClassVar[int]
    BIGGEST_LOSS_FIELD_NUMBER: _ClassVar[int]
    HEADLINE_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    work: _duration_pb2.Duration
    waiting_for_slot: _duration_pb2.Duration
    dispatch: _duration_pb2.Duration
    retry_backoff: _duration_pb2.Duration
    failed_attempts: _duration_pb2.Duration
    straggler_wait: _duration_pb2.Duration
    other: _duration_pb2.Duration
    biggest_loss_part: str
    biggest_loss_subtask: str
    biggest_loss: _duration_pb2.Duration
    headline: str
    waiting_for_approval: _duration_pb2.Duration
    waiting_for_placement: _duration_pb2.Duration
    def __init__(self, work: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., waiting_for_slot: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., dispatch: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., failed_attempts: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., straggler_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., other: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., biggest_loss_part: _Optional[str] = ..., biggest_loss_subtask: _Optional[str] = ..., biggest_loss: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., headline: _Optional[str] = ..., waiting_for_approval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., waiting_for_placement: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SubtaskStatus(_message.Message):
    __slots__ = ("id", "state", "attempt", "worker_id", "started_at", "finished_at", "output_json", "error_kind", "error_message", "tool", "output_ref", "depends_on", "kind", "parent", "stage", "ready_at", "first_started_at", "approval_prompt", "artifacts", "reused_from")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_REF_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    READY_AT_FIELD_NUMBER: _ClassVar[int]
    FIRST_STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_PROMPT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    REUSED_FROM_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: SubtaskState
    attempt: int
    worker_id: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    output_json: str
    error_kind: FailureKind
    error_message: str
    tool: str
    output_ref: str
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    kind: str
    parent: str
    stage: int
    ready_at: _timestamp_pb2.Timestamp
    first_started_at: _timestamp_pb2.Timestamp
    approval_prompt: str
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    reused_from: str
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[SubtaskState, str]] = ..., attempt: _Optional[int] = ..., worker_id: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., output_json: _Optional[str] = ..., error_kind: _Optional[_Union[FailureKind, str]] = ..., error_message: _Optional[str] = ..., tool: _Optional[str] = ..., output_ref: _Optional[str] = ..., depends_on: _Optional[_Iterable[str]] = ..., kind: _Optional[str] = ..., parent: _Optional[str] = ..., stage: _Optional[int] = ..., ready_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., first_started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., approval_prompt: _Optional[str] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ..., reused_from: _Optional[str] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("run_id", "seq", "time", "run_started", "subtask_started", "subtask_succeeded", "subtask_failed", "subtask_skipped", "run_finished", "agent_step", "stage_started", "budget_exceeded", "warning", "speculated", "approval_requested", "agent_output")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    RUN_STARTED_FIELD_NUMBER: _ClassVar[int]
    SUBTASK_STARTED_FIELD_NUMBER: _ClassVar[int]
    SUBTASK_SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    SUBTASK_FAILED_FIELD_NUMBER: _ClassVar[int]
    SUBTASK_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    RUN_FINISHED_FIELD_NUMBER: _ClassVar[int]
    AGENT_STEP_FIELD_NUMBER: _ClassVar[int]
    STAGE_STARTED_FIELD_NUMBER: _ClassVar[int]
    BUDGET_EXCEEDED_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    SPECULATED_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    AGENT_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    seq: int
    time: _timestamp_pb2.Timestamp
    run_started: RunStarted
    subtask_started: SubtaskStarted
    subtask_succeeded: SubtaskSucceeded
    subtask_failed: SubtaskFailed
    subtask_skipped: SubtaskSkipped
    run_finished: RunFinished
    agent_step: AgentStep
    stage_started: StageStarted
    budget_exceeded: BudgetExceeded
    warning: Warning
    speculated: Speculated
    approval_requested: ApprovalRequested
    agent_output: AgentOutput
    def __init__(self, run_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run_started: _Optional[_Union[RunStarted, _Mapping]] = ..., subtask_started: _Optional[_Union[SubtaskStarted, _Mapping]] = ..., subtask_succeeded: _Optional[_Union[SubtaskSucceeded, _Mapping]] = ..., subtask_failed: _Optional[_Union[SubtaskFailed, _Mapping]] = ..., subtask_skipped: _Optional[_Union[SubtaskSkipped, _Mapping]] = ..., run_finished: _Optional[_Union[RunFinished, _Mapping]] = ..., agent_step: _Optional[_Union[AgentStep, _Mapping]] = ..., stage_started: _Optional[_Union[StageStarted, _Mapping]] = ..., budget_exceeded: _Optional[_Union[BudgetExceeded, _Mapping]] = ..., warning: _Optional[_Union[Warning, _Mapping]] = ..., speculated: _Optional[_Union[Speculated, _Mapping]] = ..., approval_requested: _Optional[_Union[ApprovalRequested, _Mapping]] = ..., agent_output: _Optional[_Union[AgentOutput, _Mapping]] = ...) -> None: ...

class AgentOutput(_message.Message):
    __slots__ = ("subtask_id", "attempt", "turn", "text", "reasoning", "offset", "tools_started", "tools_finished", "output_seq", "output_epoch")
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOOLS_STARTED_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FINISHED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SEQ_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    subtask_id: str
    attempt: int
    turn: int
    text: str
    reasoning: str
    offset: int
    tools_started: _containers.RepeatedScalarFieldContainer[str]
    tools_finished: _containers.RepeatedCompositeFieldContainer[ToolFinished]
    output_seq: int
    output_epoch: int
    def __init__(self, subtask_id: _Optional[str] = ..., attempt: _Optional[int] = ..., turn: _Optional[int] = ..., text: _Optional[str] = ..., reasoning: _Optional[str] = ..., offset: _Optional[int] = ..., tools_started: _Optional[_Iterable[str]] = ..., tools_finished: _Optional[_Iterable[_Union[ToolFinished, _Mapping]]] = ..., output_seq: _Optional[int] = ..., output_epoch: _Optional[int] = ...) -> None: ...

class ToolFinished(_message.Message):
    __slots__ = ("tool", "failed")
    TOOL_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    tool: str
    failed: bool
    def __init__(self, tool: _Optional[str] = ..., failed: _Optional[bool] = ...) -> None: ...

class ApprovalRequested(_message.Message):
    __slots__ = ("subtask_id", "prompt", "deadline", "on_timeout")
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    ON_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    subtask_id: str
    prompt: str
    deadline: _timestamp_pb2.Timestamp
    on_timeout: Decision
    def __init__(self, subtask_id: _Optional[str] = ..., prompt: _Optional[str] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., on_timeout: _Optional[_Union[Decision, str]] = ...) -> None: ...

class Speculated(_message.Message):
    __slots__ = ("subtask_id", "worker_id", "after")
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    subtask_id: str
    worker_id: str
    after: _duration_pb2.Duration
    def __init__(self, subtask_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class AgentStep(_message.Message):
    __slots__ = ("subtask_id", "steps", "tool_calls", "critical_steps", "total_steps")
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    subtask_id: str
    steps: int
    tool_calls: int
    critical_steps: int
    total_steps: int
    def __init__(self, subtask_id: _Optional[str] = ..., steps: _Optional[int] = ..., tool_calls: _Optional[int] = ..., critical_steps: _Optional[int] = ..., total_steps: _Optional[int] = ...) -> None: ...

class StageStarted(_message.Message):
    __slots__ = ("subtask_id", "stage", "subagent_ids", "refused")
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SUBAGENT_IDS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    subtask_id: str
    stage: int
    subagent_ids: _containers.RepeatedScalarFieldContainer[str]
    refused: int
    def __init__(self, subtask_id: _Optional[str] = ..., stage: _Optional[int] = ..., subagent_ids: _Optional[_Iterable[str]] = ..., refused: _Optional[int] = ...) -> None: ...

class BudgetExceeded(_message.Message):
    __slots__ = ("what",)
    WHAT_FIELD_NUMBER: _ClassVar[int]
    what: str
    def __init__(self, what: _Optional[str] = ...) -> None: ...

class Warning(_message.Message):
    __slots__ = ("subtask_id", "message")
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    subtask_id: str
    message: str
    def __init__(self, subtask_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class RunStarted(_message.Message):
    __slots__ = ("name", "total_subtasks")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SUBTASKS_FIELD_NUMBER: _ClassVar[int]
    name: str
    total_subtasks: int
    def __init__(self, name: _Optional[str] = ..., total_subtasks: _Optional[int] = ...) -> None: ...

class SubtaskStarted(_message.Message):
    __slots__ = ("subtask_id", "attempt", "worker_id")
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    subtask_id: str
    attempt: int
    worker_id: str
    def __init__(self, subtask_id: _Optional[str] = ..., attempt: _Optional[int] = ..., worker_id: _Optional[str] = ...) -> None: ...

class SubtaskSucceeded(_message.Message):
    __slots__ = ("subtask_id", "attempt", "duration")
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    subtask_id: str
    attempt: int
    duration: _duration_pb2.Duration
    def __init__(self, subtask_id: _Optional[str] = ..., attempt: _Optional[int] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SubtaskFailed(_message.Message):
    __slots__ = ("subtask_id", "attempt", "kind", "message", "retry_in")
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_IN_FIELD_NUMBER: _ClassVar[int]
    subtask_id: str
    attempt: int
    kind: FailureKind
    message: str
    retry_in: _duration_pb2.Duration
    def __init__(self, subtask_id: _Optional[str] = ..., attempt: _Optional[int] = ..., kind: _Optional[_Union[FailureKind, str]] = ..., message: _Optional[str] = ..., retry_in: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SubtaskSkipped(_message.Message):
    __slots__ = ("subtask_id", "because")
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    BECAUSE_FIELD_NUMBER: _ClassVar[int]
    subtask_id: str
    because: str
    def __init__(self, subtask_id: _Optional[str] = ..., because: _Optional[str] = ...) -> None: ...

class RunFinished(_message.Message):
    __slots__ = ("state", "summary")
    STATE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    state: RunState
    summary: RunSummary
    def __init__(self, state: _Optional[_Union[RunState, str]] = ..., summary: _Optional[_Union[RunSummary, _Mapping]] = ...) -> None: ...
