"""An operator delivering the platform's messages to its subscribers (kafka-python).

Operators read ``stopsms.outbound.v1`` with their group ``stopsms.operator.<id>.outbound`` and
deliver each message that is theirs: the ones naming them (they forwarded the citizen's reply),
and the ones naming no operator whose number they serve (numbers are portable: only operators
know). A message past its ``expires_time`` is dropped, one already delivered (same
``message_id``) is not sent again, and the offset is committed after delivery. The stand-in
operators of ``stopsms up`` print what they deliver; examples/operator_outbound.py is the same
contract for an operator's engineers, with a pluggable SMS sender.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.domain.privacy import Pseudonymiser
from stopsms.domain.topics import Topics
from stopsms.tools.operator_feed import assigned_consumer
from stopsms.v1 import events_pb2

#: Delivers one SMS: the number (E.164), the message, its text.
Deliver = Callable[[str, events_pb2.OutboundMessage, str], None]
#: Message ids remembered to deliver each once (a message is redelivered only after a crash).
REMEMBERED = 100_000


def masked(msisdn: str) -> str:
    """A number as a console may show it: the country code and the last two digits."""
    return msisdn[:4] + "•" * max(len(msisdn) - 6, 0) + msisdn[-2:]


def print_sms(msisdn: str, message: events_pb2.OutboundMessage, text: str) -> None:
    """What the stand-in operators do: show the SMS on the console (the number masked)."""
    purpose = events_pb2.OutboundPurpose.Name(message.purpose).removeprefix("OUTBOUND_PURPOSE_")
    print(f"SMS to {masked(msisdn)} [{purpose.lower()}]: {text}", flush=True)


def is_ours(message: events_pb2.OutboundMessage, operator_id: str, serves: bool) -> bool:
    """Whether this operator delivers the message: it is named, or none is and it serves it."""
    return message.operator_id == operator_id or (not message.operator_id and serves)


def deliver_messages(
    bootstrap: KafkaAccess | str,
    operator_id: str,
    pseudonymiser: Pseudonymiser,
    namespace: str = "",
    deliver: Deliver = print_sms,
    serves: Callable[[str], bool] = lambda msisdn: True,
    stop: threading.Event | None = None,
) -> int:
    """Consume, deliver what is ours, then commit; return how many messages were delivered."""
    topics = Topics(namespace)
    consumer = assigned_consumer(
        bootstrap, topics.outbound, topics.operator_outbound_group(operator_id), stop
    )
    if consumer is None:
        return 0
    delivered: OrderedDict[str, None] = OrderedDict()
    count = 0
    try:
        while stop is None or not stop.is_set():
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if record.value is None:
                        continue
                    message = events_pb2.OutboundMessage.FromString(record.value)
                    if message.message_id in delivered:
                        continue
                    if message.expires_time.seconds and message.expires_time.seconds < time.time():
                        continue
                    msisdn = pseudonymiser.unseal(message.sealed_msisdn)
                    if not is_ours(message, operator_id, serves(msisdn)):
                        continue
                    text = (
                        pseudonymiser.unseal_text(message.sealed_text)
                        if message.HasField("sealed_text")
                        else message.text
                    )
                    deliver(msisdn, message, text)
                    delivered[message.message_id] = None
                    if len(delivered) > REMEMBERED:
                        delivered.popitem(last=False)
                    count += 1
            if batch:
                consumer.commit()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return count
