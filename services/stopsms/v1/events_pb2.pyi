import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_OPT_OUT: _ClassVar[Action]
    ACTION_OPT_IN: _ClassVar[Action]

class Channel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_UNSPECIFIED: _ClassVar[Channel]
    CHANNEL_LINK: _ClassVar[Channel]
    CHANNEL_SMS: _ClassVar[Channel]
    CHANNEL_API: _ClassVar[Channel]
    CHANNEL_WEB: _ClassVar[Channel]
    CHANNEL_CALL_CENTER: _ClassVar[Channel]
    CHANNEL_APP: _ClassVar[Channel]

class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATE_UNSPECIFIED: _ClassVar[State]
    STATE_SUPPRESSED: _ClassVar[State]
    STATE_ALLOWED: _ClassVar[State]

class PartyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARTY_KIND_UNSPECIFIED: _ClassVar[PartyKind]
    PARTY_KIND_OPERATOR: _ClassVar[PartyKind]
    PARTY_KIND_PSVA: _ClassVar[PartyKind]
    PARTY_KIND_REGULATOR: _ClassVar[PartyKind]
    PARTY_KIND_PLATFORM: _ClassVar[PartyKind]

class DeliveryStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_STATUS_UNSPECIFIED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_PENDING: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_APPLIED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_LATE: _ClassVar[DeliveryStatus]

class AuditDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_DECISION_UNSPECIFIED: _ClassVar[AuditDecision]
    AUDIT_DECISION_PERMITTED: _ClassVar[AuditDecision]
    AUDIT_DECISION_DENIED: _ClassVar[AuditDecision]
ACTION_UNSPECIFIED: Action
ACTION_OPT_OUT: Action
ACTION_OPT_IN: Action
CHANNEL_UNSPECIFIED: Channel
CHANNEL_LINK: Channel
CHANNEL_SMS: Channel
CHANNEL_API: Channel
CHANNEL_WEB: Channel
CHANNEL_CALL_CENTER: Channel
CHANNEL_APP: Channel
STATE_UNSPECIFIED: State
STATE_SUPPRESSED: State
STATE_ALLOWED: State
PARTY_KIND_UNSPECIFIED: PartyKind
PARTY_KIND_OPERATOR: PartyKind
PARTY_KIND_PSVA: PartyKind
PARTY_KIND_REGULATOR: PartyKind
PARTY_KIND_PLATFORM: PartyKind
DELIVERY_STATUS_UNSPECIFIED: DeliveryStatus
DELIVERY_STATUS_PENDING: DeliveryStatus
DELIVERY_STATUS_APPLIED: DeliveryStatus
DELIVERY_STATUS_LATE: DeliveryStatus
AUDIT_DECISION_UNSPECIFIED: AuditDecision
AUDIT_DECISION_PERMITTED: AuditDecision
AUDIT_DECISION_DENIED: AuditDecision

class SealedMsisdn(_message.Message):
    __slots__ = ("key_id", "nonce", "ciphertext")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    nonce: bytes
    ciphertext: bytes
    def __init__(self, key_id: _Optional[str] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class PreferenceRequested(_message.Message):
    __slots__ = ("event_id", "request_id", "party_id", "action", "sender_id", "channel", "action_time", "accepted_time", "subject", "sealed_msisdn", "undeclared_sender")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    ACTION_TIME_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_TIME_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    SEALED_MSISDN_FIELD_NUMBER: _ClassVar[int]
    UNDECLARED_SENDER_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    request_id: str
    party_id: str
    action: Action
    sender_id: str
    channel: Channel
    action_time: _timestamp_pb2.Timestamp
    accepted_time: _timestamp_pb2.Timestamp
    subject: str
    sealed_msisdn: SealedMsisdn
    undeclared_sender: bool
    def __init__(self, event_id: _Optional[str] = ..., request_id: _Optional[str] = ..., party_id: _Optional[str] = ..., action: _Optional[_Union[Action, str]] = ..., sender_id: _Optional[str] = ..., channel: _Optional[_Union[Channel, str]] = ..., action_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., accepted_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., subject: _Optional[str] = ..., sealed_msisdn: _Optional[_Union[SealedMsisdn, _Mapping]] = ..., undeclared_sender: _Optional[bool] = ...) -> None: ...

class SuppressionChanged(_message.Message):
    __slots__ = ("event_id", "request_id", "party_id", "action", "sender_id", "channel", "action_time", "accepted_time", "subject", "sealed_msisdn", "undeclared_sender", "state", "version", "changed", "decided_time")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    ACTION_TIME_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_TIME_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    SEALED_MSISDN_FIELD_NUMBER: _ClassVar[int]
    UNDECLARED_SENDER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    DECIDED_TIME_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    request_id: str
    party_id: str
    action: Action
    sender_id: str
    channel: Channel
    action_time: _timestamp_pb2.Timestamp
    accepted_time: _timestamp_pb2.Timestamp
    subject: str
    sealed_msisdn: SealedMsisdn
    undeclared_sender: bool
    state: State
    version: int
    changed: bool
    decided_time: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., request_id: _Optional[str] = ..., party_id: _Optional[str] = ..., action: _Optional[_Union[Action, str]] = ..., sender_id: _Optional[str] = ..., channel: _Optional[_Union[Channel, str]] = ..., action_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., accepted_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., subject: _Optional[str] = ..., sealed_msisdn: _Optional[_Union[SealedMsisdn, _Mapping]] = ..., undeclared_sender: _Optional[bool] = ..., state: _Optional[_Union[State, str]] = ..., version: _Optional[int] = ..., changed: _Optional[bool] = ..., decided_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeliveryReceipt(_message.Message):
    __slots__ = ("event_id", "request_id", "origin_party_id", "party_id", "party_kind", "status", "action_time", "applied_time", "concerned_party_ids", "partition", "offset", "sender_id", "action")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    PARTY_KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACTION_TIME_FIELD_NUMBER: _ClassVar[int]
    APPLIED_TIME_FIELD_NUMBER: _ClassVar[int]
    CONCERNED_PARTY_IDS_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    request_id: str
    origin_party_id: str
    party_id: str
    party_kind: PartyKind
    status: DeliveryStatus
    action_time: _timestamp_pb2.Timestamp
    applied_time: _timestamp_pb2.Timestamp
    concerned_party_ids: _containers.RepeatedScalarFieldContainer[str]
    partition: int
    offset: int
    sender_id: str
    action: Action
    def __init__(self, event_id: _Optional[str] = ..., request_id: _Optional[str] = ..., origin_party_id: _Optional[str] = ..., party_id: _Optional[str] = ..., party_kind: _Optional[_Union[PartyKind, str]] = ..., status: _Optional[_Union[DeliveryStatus, str]] = ..., action_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., applied_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., concerned_party_ids: _Optional[_Iterable[str]] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ..., sender_id: _Optional[str] = ..., action: _Optional[_Union[Action, str]] = ...) -> None: ...

class PartyDelivery(_message.Message):
    __slots__ = ("party_id", "party_kind", "status", "applied_time")
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    PARTY_KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_TIME_FIELD_NUMBER: _ClassVar[int]
    party_id: str
    party_kind: PartyKind
    status: DeliveryStatus
    applied_time: _timestamp_pb2.Timestamp
    def __init__(self, party_id: _Optional[str] = ..., party_kind: _Optional[_Union[PartyKind, str]] = ..., status: _Optional[_Union[DeliveryStatus, str]] = ..., applied_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PropagationRecord(_message.Message):
    __slots__ = ("event_id", "request_id", "origin_party_id", "sender_id", "action", "action_time", "deliveries", "done", "done_time")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACTION_TIME_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    DONE_TIME_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    request_id: str
    origin_party_id: str
    sender_id: str
    action: Action
    action_time: _timestamp_pb2.Timestamp
    deliveries: _containers.RepeatedCompositeFieldContainer[PartyDelivery]
    done: bool
    done_time: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., request_id: _Optional[str] = ..., origin_party_id: _Optional[str] = ..., sender_id: _Optional[str] = ..., action: _Optional[_Union[Action, str]] = ..., action_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deliveries: _Optional[_Iterable[_Union[PartyDelivery, _Mapping]]] = ..., done: _Optional[bool] = ..., done_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StopLink(_message.Message):
    __slots__ = ("code", "subject", "sealed_msisdn", "sender_id", "issuer_party_id", "issued_time", "expire_time")
    CODE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    SEALED_MSISDN_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUER_PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    code: str
    subject: str
    sealed_msisdn: SealedMsisdn
    sender_id: str
    issuer_party_id: str
    issued_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, code: _Optional[str] = ..., subject: _Optional[str] = ..., sealed_msisdn: _Optional[_Union[SealedMsisdn, _Mapping]] = ..., sender_id: _Optional[str] = ..., issuer_party_id: _Optional[str] = ..., issued_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("source_topic", "partition", "offset", "key", "value", "reason", "failed_time")
    SOURCE_TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FAILED_TIME_FIELD_NUMBER: _ClassVar[int]
    source_topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    reason: str
    failed_time: _timestamp_pb2.Timestamp
    def __init__(self, source_topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., reason: _Optional[str] = ..., failed_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("party_id", "party_kind", "method", "subjects", "decision", "detail", "time")
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    PARTY_KIND_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    party_id: str
    party_kind: PartyKind
    method: str
    subjects: _containers.RepeatedScalarFieldContainer[str]
    decision: AuditDecision
    detail: str
    time: _timestamp_pb2.Timestamp
    def __init__(self, party_id: _Optional[str] = ..., party_kind: _Optional[_Union[PartyKind, str]] = ..., method: _Optional[str] = ..., subjects: _Optional[_Iterable[str]] = ..., decision: _Optional[_Union[AuditDecision, str]] = ..., detail: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
