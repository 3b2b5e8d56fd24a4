from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Message(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class ReasonRequest(_message.Message):
    __slots__ = ("model", "input", "messages", "instructions", "effort", "summary", "max_output_tokens", "task", "metadata", "request_id", "seed", "strategy", "background")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    EFFORT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    model: str
    input: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    instructions: str
    effort: str
    summary: str
    max_output_tokens: int
    task: str
    metadata: _containers.ScalarMap[str, str]
    request_id: str
    seed: int
    strategy: str
    background: bool
    def __init__(self, model: _Optional[str] = ..., input: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., instructions: _Optional[str] = ..., effort: _Optional[str] = ..., summary: _Optional[str] = ..., max_output_tokens: _Optional[int] = ..., task: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ..., seed: _Optional[int] = ..., strategy: _Optional[str] = ..., background: _Optional[bool] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    total_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ReasonResponse(_message.Message):
    __slots__ = ("id", "status", "answer", "summary", "usage", "tree_id", "effort", "strategy", "incomplete_reason", "error", "model")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TREE_ID_FIELD_NUMBER: _ClassVar[int]
    EFFORT_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    INCOMPLETE_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: str
    answer: str
    summary: _containers.RepeatedScalarFieldContainer[str]
    usage: Usage
    tree_id: str
    effort: str
    strategy: str
    incomplete_reason: str
    error: Error
    model: str
    def __init__(self, id: _Optional[str] = ..., status: _Optional[str] = ..., answer: _Optional[str] = ..., summary: _Optional[_Iterable[str]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., tree_id: _Optional[str] = ..., effort: _Optional[str] = ..., strategy: _Optional[str] = ..., incomplete_reason: _Optional[str] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("kind", "text", "data_json")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    kind: str
    text: str
    data_json: str
    def __init__(self, kind: _Optional[str] = ..., text: _Optional[str] = ..., data_json: _Optional[str] = ...) -> None: ...

class ReasonEvent(_message.Message):
    __slots__ = ("sequence_number", "progress", "response")
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    sequence_number: int
    progress: Progress
    response: ReasonResponse
    def __init__(self, sequence_number: _Optional[int] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., response: _Optional[_Union[ReasonResponse, _Mapping]] = ...) -> None: ...

class GetTreeRequest(_message.Message):
    __slots__ = ("tree_id",)
    TREE_ID_FIELD_NUMBER: _ClassVar[int]
    tree_id: str
    def __init__(self, tree_id: _Optional[str] = ...) -> None: ...

class TreeMeta(_message.Message):
    __slots__ = ("tree_id", "owner", "effort", "strategy", "status", "created_at", "updated_at", "model", "question", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TREE_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    EFFORT_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    tree_id: str
    owner: str
    effort: str
    strategy: str
    status: str
    created_at: float
    updated_at: float
    model: str
    question: str
    extra: _containers.ScalarMap[str, str]
    def __init__(self, tree_id: _Optional[str] = ..., owner: _Optional[str] = ..., effort: _Optional[str] = ..., strategy: _Optional[str] = ..., status: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., model: _Optional[str] = ..., question: _Optional[str] = ..., extra: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("node_id", "parent_id", "depth", "text", "prompt_tokens", "completion_tokens", "cached_tokens", "score", "scores", "status", "answer")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    parent_id: str
    depth: int
    text: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    score: float
    scores: _containers.ScalarMap[str, float]
    status: str
    answer: str
    def __init__(self, node_id: _Optional[str] = ..., parent_id: _Optional[str] = ..., depth: _Optional[int] = ..., text: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ..., score: _Optional[float] = ..., scores: _Optional[_Mapping[str, float]] = ..., status: _Optional[str] = ..., answer: _Optional[str] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("granted", "spent", "reserved")
    class GrantedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class SpentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ReservedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    granted: _containers.ScalarMap[str, int]
    spent: _containers.ScalarMap[str, int]
    reserved: _containers.ScalarMap[str, int]
    def __init__(self, granted: _Optional[_Mapping[str, int]] = ..., spent: _Optional[_Mapping[str, int]] = ..., reserved: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Tree(_message.Message):
    __slots__ = ("meta", "nodes", "winning_path", "budget")
    META_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    WINNING_PATH_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    meta: TreeMeta
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    winning_path: _containers.RepeatedScalarFieldContainer[str]
    budget: Budget
    def __init__(self, meta: _Optional[_Union[TreeMeta, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., winning_path: _Optional[_Iterable[str]] = ..., budget: _Optional[_Union[Budget, _Mapping]] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ResponseRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...
