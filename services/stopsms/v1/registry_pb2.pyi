import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_ALLOWED: _ClassVar[Verdict]
    VERDICT_SUPPRESSED: _ClassVar[Verdict]
    VERDICT_INVALID_NUMBER: _ClassVar[Verdict]

class MatchedScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MATCHED_SCOPE_UNSPECIFIED: _ClassVar[MatchedScope]
    MATCHED_SCOPE_SENDER: _ClassVar[MatchedScope]
    MATCHED_SCOPE_GLOBAL: _ClassVar[MatchedScope]
VERDICT_UNSPECIFIED: Verdict
VERDICT_ALLOWED: Verdict
VERDICT_SUPPRESSED: Verdict
VERDICT_INVALID_NUMBER: Verdict
MATCHED_SCOPE_UNSPECIFIED: MatchedScope
MATCHED_SCOPE_SENDER: MatchedScope
MATCHED_SCOPE_GLOBAL: MatchedScope

class PartitionOffset(_message.Message):
    __slots__ = ("partition", "offset")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    partition: int
    offset: int
    def __init__(self, partition: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("msisdn", "sender_id")
    MSISDN_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    msisdn: str
    sender_id: str
    def __init__(self, msisdn: _Optional[str] = ..., sender_id: _Optional[str] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("verdict", "matched_scope", "since", "version", "as_of")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    MATCHED_SCOPE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    matched_scope: MatchedScope
    since: _timestamp_pb2.Timestamp
    version: int
    as_of: _containers.RepeatedCompositeFieldContainer[PartitionOffset]
    def __init__(self, verdict: _Optional[_Union[Verdict, str]] = ..., matched_scope: _Optional[_Union[MatchedScope, str]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ..., as_of: _Optional[_Iterable[_Union[PartitionOffset, _Mapping]]] = ...) -> None: ...

class CheckResult(_message.Message):
    __slots__ = ("verdict", "matched_scope", "since")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    MATCHED_SCOPE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    matched_scope: MatchedScope
    since: _timestamp_pb2.Timestamp
    def __init__(self, verdict: _Optional[_Union[Verdict, str]] = ..., matched_scope: _Optional[_Union[MatchedScope, str]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CheckBatchRequest(_message.Message):
    __slots__ = ("sender_id", "msisdns")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    MSISDNS_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    msisdns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sender_id: _Optional[str] = ..., msisdns: _Optional[_Iterable[str]] = ...) -> None: ...

class CheckBatchResponse(_message.Message):
    __slots__ = ("results", "chunk_index", "as_of")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CheckResult]
    chunk_index: int
    as_of: _containers.RepeatedCompositeFieldContainer[PartitionOffset]
    def __init__(self, results: _Optional[_Iterable[_Union[CheckResult, _Mapping]]] = ..., chunk_index: _Optional[int] = ..., as_of: _Optional[_Iterable[_Union[PartitionOffset, _Mapping]]] = ...) -> None: ...
