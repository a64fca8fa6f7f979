import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from stopsms.v1 import events_pb2 as _events_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WatchChangesRequest(_message.Message):
    __slots__ = ("cursor",)
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    def __init__(self, cursor: _Optional[str] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("event_id", "msisdn", "sender_id", "state", "action", "version", "changed", "action_time", "subject")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    MSISDN_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    ACTION_TIME_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    msisdn: str
    sender_id: str
    state: _events_pb2.State
    action: _events_pb2.Action
    version: int
    changed: bool
    action_time: _timestamp_pb2.Timestamp
    subject: str
    def __init__(self, event_id: _Optional[str] = ..., msisdn: _Optional[str] = ..., sender_id: _Optional[str] = ..., state: _Optional[_Union[_events_pb2.State, str]] = ..., action: _Optional[_Union[_events_pb2.Action, str]] = ..., version: _Optional[int] = ..., changed: _Optional[bool] = ..., action_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., subject: _Optional[str] = ...) -> None: ...

class WatchChangesResponse(_message.Message):
    __slots__ = ("change", "cursor")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    change: Change
    cursor: str
    def __init__(self, change: _Optional[_Union[Change, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class AcknowledgeRequest(_message.Message):
    __slots__ = ("cursor",)
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    def __init__(self, cursor: _Optional[str] = ...) -> None: ...

class AcknowledgeResponse(_message.Message):
    __slots__ = ("cursor",)
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    def __init__(self, cursor: _Optional[str] = ...) -> None: ...

class GetPropagationRequest(_message.Message):
    __slots__ = ("request_id", "event_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    event_id: str
    def __init__(self, request_id: _Optional[str] = ..., event_id: _Optional[str] = ...) -> None: ...

class GetPropagationResponse(_message.Message):
    __slots__ = ("propagation",)
    PROPAGATION_FIELD_NUMBER: _ClassVar[int]
    propagation: _events_pb2.PropagationRecord
    def __init__(self, propagation: _Optional[_Union[_events_pb2.PropagationRecord, _Mapping]] = ...) -> None: ...
