import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from stopsms.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmissionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBMISSION_STATUS_UNSPECIFIED: _ClassVar[SubmissionStatus]
    SUBMISSION_STATUS_ACCEPTED: _ClassVar[SubmissionStatus]
    SUBMISSION_STATUS_IGNORED: _ClassVar[SubmissionStatus]

class Intent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTENT_UNSPECIFIED: _ClassVar[Intent]
    INTENT_OPT_OUT: _ClassVar[Intent]
    INTENT_OPT_OUT_ALL: _ClassVar[Intent]
    INTENT_OPT_IN: _ClassVar[Intent]
    INTENT_NONE: _ClassVar[Intent]
SUBMISSION_STATUS_UNSPECIFIED: SubmissionStatus
SUBMISSION_STATUS_ACCEPTED: SubmissionStatus
SUBMISSION_STATUS_IGNORED: SubmissionStatus
INTENT_UNSPECIFIED: Intent
INTENT_OPT_OUT: Intent
INTENT_OPT_OUT_ALL: Intent
INTENT_OPT_IN: Intent
INTENT_NONE: Intent

class SubmitOptOutRequest(_message.Message):
    __slots__ = ("request_id", "msisdn", "sender_id", "channel", "action_time")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MSISDN_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    ACTION_TIME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    msisdn: str
    sender_id: str
    channel: _events_pb2.Channel
    action_time: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., msisdn: _Optional[str] = ..., sender_id: _Optional[str] = ..., channel: _Optional[_Union[_events_pb2.Channel, str]] = ..., action_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubmitOptOutResponse(_message.Message):
    __slots__ = ("request_id", "status", "event_id", "accepted_time")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_TIME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    status: SubmissionStatus
    event_id: str
    accepted_time: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., status: _Optional[_Union[SubmissionStatus, str]] = ..., event_id: _Optional[str] = ..., accepted_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubmitKeywordRequest(_message.Message):
    __slots__ = ("request_id", "msisdn", "sender_id", "text", "action_time")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MSISDN_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ACTION_TIME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    msisdn: str
    sender_id: str
    text: str
    action_time: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., msisdn: _Optional[str] = ..., sender_id: _Optional[str] = ..., text: _Optional[str] = ..., action_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubmitKeywordResponse(_message.Message):
    __slots__ = ("intent", "request_id", "sender_id", "event_id", "status", "undeclared_sender")
    INTENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    UNDECLARED_SENDER_FIELD_NUMBER: _ClassVar[int]
    intent: Intent
    request_id: str
    sender_id: str
    event_id: str
    status: SubmissionStatus
    undeclared_sender: bool
    def __init__(self, intent: _Optional[_Union[Intent, str]] = ..., request_id: _Optional[str] = ..., sender_id: _Optional[str] = ..., event_id: _Optional[str] = ..., status: _Optional[_Union[SubmissionStatus, str]] = ..., undeclared_sender: _Optional[bool] = ...) -> None: ...

class IssueStopLinkRequest(_message.Message):
    __slots__ = ("msisdn", "sender_id")
    MSISDN_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    msisdn: str
    sender_id: str
    def __init__(self, msisdn: _Optional[str] = ..., sender_id: _Optional[str] = ...) -> None: ...

class IssueStopLinkResponse(_message.Message):
    __slots__ = ("url", "code", "expire_time")
    URL_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    url: str
    code: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, url: _Optional[str] = ..., code: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class IssueStopLinksRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[IssueStopLinkRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[IssueStopLinkRequest, _Mapping]]] = ...) -> None: ...

class IssueStopLinksResponse(_message.Message):
    __slots__ = ("links",)
    LINKS_FIELD_NUMBER: _ClassVar[int]
    links: _containers.RepeatedCompositeFieldContainer[IssueStopLinkResponse]
    def __init__(self, links: _Optional[_Iterable[_Union[IssueStopLinkResponse, _Mapping]]] = ...) -> None: ...
