"""The register of declared senders on the real platform (broker, Redis, the three services, TLS).

A PSVA declares a sender with a short code as its alias: it is PENDING and its links are
refused until the regulator makes it ACTIVE. A STOP sent to the short code suppresses the
sender's name, at the registry and in the proof, which reaches the PSVA the register entitles.
Suspended, its links are refused again and the message check says why; a campaign file is
checked line by line.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from stopsms.adapters.clients import party_channel, party_channel_sync
from stopsms.adapters.kafka import read_topic
from stopsms.domain.topics import Topics
from stopsms.tools.campaign_check import check_campaign
from stopsms.tools.demo_parties import DemoParties
from stopsms.tools.local_platform import LocalPlatform
from stopsms.v1 import (
    events_pb2,
    intake_pb2,
    intake_pb2_grpc,
    notifier_pb2,
    notifier_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    senders_pb2,
    senders_pb2_grpc,
)

from .test_link_page_browser import browser as browser  # noqa: F401 - the fixture
from .test_link_page_browser import shot, visible_text

pytestmark = pytest.mark.e2e
S = senders_pb2
NUMBER = "0677001122"


def stub_of(platform: LocalPlatform, service: str, party: str, stub_class):  # type: ignore[no-untyped-def]
    channel, metadata = party_channel_sync(
        platform.endpoints[f"{service}_grpc"], party, platform.tls_folder
    )
    return channel, stub_class(channel), metadata


def wait_until(what: str, probe, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what} never happened within {timeout:.0f} s"
        time.sleep(0.2)


def test_a_declared_sender_is_reviewed_aliased_suppressed_and_suspended(
    secure_platform: LocalPlatform, tmp_path: Path
) -> None:
    name, short_code = f"SOUK{uuid.uuid4().hex[:4].upper()}", str(40000 + uuid.uuid4().int % 9999)
    psva = stub_of(
        secure_platform, "intake", "sahara-push", senders_pb2_grpc.SenderRegistryServiceStub
    )
    regulator = stub_of(
        secure_platform, "intake", "cndp", senders_pb2_grpc.SenderRegistryServiceStub
    )
    links = stub_of(secure_platform, "intake", "sahara-push", intake_pb2_grpc.IntakeServiceStub)
    operator = stub_of(secure_platform, "intake", "iam", intake_pb2_grpc.IntakeServiceStub)
    registry = stub_of(secure_platform, "registry", "iam", registry_pb2_grpc.RegistryServiceStub)
    notifier = stub_of(secure_platform, "notifier", "iam", notifier_pb2_grpc.NotifierServiceStub)
    parties = DemoParties.for_platform(secure_platform).start()
    try:
        declared = (
            psva[1]
            .DeclareSender(
                S.DeclareSenderRequest(
                    request_id=f"declare-{name}",
                    sender=S.Sender(
                        sender_id=name,
                        kind=S.SENDER_KIND_ALPHANUMERIC,
                        display_name="Souk Online",
                        aliases=[short_code],
                        legal_entity="Souk Online SARL",
                        cndp_declaration="D-2026-0117",
                        sending_party_ids=["sahara-push"],
                    ),
                ),
                metadata=psva[2],
                timeout=15,
            )
            .sender
        )
        assert declared.status == S.SENDER_STATUS_PENDING

        def issue_link() -> intake_pb2.IssueStopLinkResponse:
            return links[1].IssueStopLink(
                intake_pb2.IssueStopLinkRequest(msisdn=NUMBER, sender_id=name),
                metadata=links[2],
                timeout=15,
            )

        with pytest.raises(grpc.RpcError) as caught:
            issue_link()
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
        assert "PENDING" in caught.value.details()  # type: ignore[attr-defined]

        def review(status: int, reason: str = "") -> S.Sender:
            return (
                regulator[1]
                .ReviewSender(
                    S.ReviewSenderRequest(
                        request_id=f"review-{name}-{status}",
                        sender_id=short_code,
                        status=status,
                        reason=reason,
                    ),
                    metadata=regulator[2],
                    timeout=15,
                )
                .sender
            )

        assert review(S.SENDER_STATUS_ACTIVE).status == S.SENDER_STATUS_ACTIVE
        link = issue_link()
        assert link.code

        # A STOP to the short code suppresses the name; the registry reads the register too.
        reply = operator[1].SubmitKeyword(
            intake_pb2.SubmitKeywordRequest(
                request_id=f"stop-{name}", msisdn=NUMBER, sender_id=short_code, text="STOP"
            ),
            metadata=operator[2],
            timeout=15,
        )
        assert (reply.sender_id, reply.undeclared_sender) == (name, False)

        def verdict(sender: str) -> int:
            return (
                registry[1]
                .Check(
                    registry_pb2.CheckRequest(msisdn=NUMBER, sender_id=sender),
                    metadata=registry[2],
                    timeout=10,
                )
                .verdict
            )

        wait_until(
            f"the registry suppressing {name} after a STOP to {short_code}",
            lambda: verdict(name) == registry_pb2.VERDICT_SUPPRESSED,
        )
        assert verdict(short_code) == registry_pb2.VERDICT_SUPPRESSED

        def proof() -> object:
            try:
                found = (
                    notifier[1]
                    .GetPropagation(
                        notifier_pb2.GetPropagationRequest(event_id=reply.event_id),
                        metadata=notifier[2],
                        timeout=10,
                    )
                    .propagation
                )
            except grpc.RpcError as exc:  # the notifier has not opened the proof yet
                assert exc.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
                return None
            return found if found.done else None

        done = wait_until("the proof of the STOP to the short code reaching done", proof)
        assert "sahara-push" in {d.party_id for d in done.deliveries}  # type: ignore[attr-defined]

        # Suspended: no more links, and the message check says so.
        assert review(S.SENDER_STATUS_SUSPENDED, "complaints").status == S.SENDER_STATUS_SUSPENDED
        with pytest.raises(grpc.RpcError) as caught:
            issue_link()
        assert "SUSPENDED (complaints)" in caught.value.details()  # type: ignore[attr-defined]
        check = (
            psva[1]
            .CheckMessage(
                S.CheckMessageRequest(sender_id=name, text=f"Promo ! STOP au {short_code}"),
                metadata=psva[2],
                timeout=15,
            )
            .check
        )
        assert [p.code for p in check.problems] == [S.MESSAGE_PROBLEM_CODE_SENDER_SUSPENDED]

        # The audit trail on the broker: the declaration and each review, by whom, with status.
        audit_topic = Topics(secure_platform.namespace).audit

        def audited() -> list[tuple[str, str, str]] | None:
            entries = [
                events_pb2.AuditEntry.FromString(record.value)
                for record in asyncio.run(
                    read_topic(secure_platform.endpoints["kafka"], audit_topic)
                )
            ]
            found = [
                (e.party_id, e.method.rsplit("/", 1)[-1], e.detail)
                for e in entries
                if e.decision == events_pb2.AUDIT_DECISION_PERMITTED
                and f"sender {name}:" in e.detail
            ]
            return found if len(found) >= 3 else None

        trail = wait_until(f"the changes of {name} in the audit trail", audited)
        assert [(party, method) for party, method, _ in trail] == [
            ("sahara-push", "DeclareSender"),
            ("cndp", "ReviewSender"),
            ("cndp", "ReviewSender"),
        ]
        assert "PENDING" in trail[0][2] and "ACTIVE" in trail[1][2]
        assert "SUSPENDED (complaints)" in trail[2][2]

        # A campaign file, line by line, through the CLI's checker.
        campaign = tmp_path / "campaign.txt"
        campaign.write_text(
            "# the spring campaign\n"
            f"Promo -20% chez Souk ! StopSMS : {link.url}\n"
            "Promo -20% chez Souk, sans mention\n"
        )

        async def check_file():  # type: ignore[no-untyped-def]
            channel, metadata = party_channel(
                secure_platform.endpoints["intake_grpc"], "sahara-push", secure_platform.tls_folder
            )
            async with channel:
                return await check_campaign(channel, metadata, campaign, name, show=False)

        report = asyncio.run(check_file())
        assert report.texts == 2 and report.ok == 0
        assert [(line, code) for line, code, _ in report.problems] == [
            (2, "SENDER_SUSPENDED"),
            (3, "SENDER_SUSPENDED"),
            (3, "STOPSMS_MENTION_MISSING"),
        ]
    finally:
        parties.stop()
        for channel, _, _ in (psva, regulator, links, operator, registry, notifier):
            channel.close()


def replaced(element: WebElement) -> Callable[[webdriver.Chrome], bool]:
    """A wait's condition: the page that held ``element`` was replaced by another.

    Selenium's ``staleness_of`` asks the old element a question; while the browser swaps the
    pages, chromedriver may answer that question with "node does not belong to the document"
    (a plain WebDriverException, not a StaleElementReferenceException), which fails the wait
    at random. Both mean the same here: the old page is gone.
    """

    def gone(_: webdriver.Chrome) -> bool:
        try:
            element.is_enabled()
        except (StaleElementReferenceException, WebDriverException):
            return True
        return False

    return gone


def test_a_citizen_looks_up_senders_in_french_and_arabic(
    secure_platform: LocalPlatform,
    browser: webdriver.Chrome,  # noqa: F811 - the fixture
) -> None:
    name, short_code = f"SOUK{uuid.uuid4().hex[:4].upper()}", str(50000 + uuid.uuid4().int % 9999)
    psva = stub_of(
        secure_platform, "intake", "sahara-push", senders_pb2_grpc.SenderRegistryServiceStub
    )
    regulator = stub_of(
        secure_platform, "intake", "cndp", senders_pb2_grpc.SenderRegistryServiceStub
    )
    try:
        psva[1].DeclareSender(
            S.DeclareSenderRequest(
                request_id=f"declare-{name}",
                sender=S.Sender(
                    sender_id=name,
                    kind=S.SENDER_KIND_ALPHANUMERIC,
                    display_name="Souk Online",
                    aliases=[short_code],
                    legal_entity="Souk Online SARL",
                    cndp_declaration="D-2026-0117",
                    sending_party_ids=["sahara-push"],
                ),
            ),
            metadata=psva[2],
            timeout=15,
        )
        regulator[1].ReviewSender(
            S.ReviewSenderRequest(
                request_id=f"review-{name}", sender_id=name, status=S.SENDER_STATUS_ACTIVE
            ),
            metadata=regulator[2],
            timeout=15,
        )
    finally:
        psva[0].close()
        regulator[0].close()
    site = secure_platform.endpoints["intake_http"].rstrip("/")

    def look_up(text: str) -> str:
        """Submit the form and read the answer of the page that replaced this one."""
        before = browser.find_element(By.TAG_NAME, "html")
        field = browser.find_element(By.ID, "q")
        field.clear()
        field.send_keys(text)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(browser, 15).until(
            replaced(before), f"the lookup of {text!r} never answered with a new page"
        )
        return visible_text(browser, "answer")

    browser.get(f"{site}/expediteur?lang=fr")
    assert "Qui m'envoie ce SMS ?" in visible_text(browser)
    shot(browser, "senders-1-lookup-fr")
    answer = look_up(short_code)  # the short code the phone showed finds the sender
    assert "Souk Online est un expéditeur déclaré." in answer
    assert "autorisé" in answer and "Souk Online SARL" in answer and "Sahara Push" in answer
    assert f"répondez STOP au {short_code}" in answer
    shot(browser, "senders-2-declared-fr")
    answer = look_up("jumia")  # a sender the directory still lists
    assert "JUMIA est un expéditeur déclaré." in answer and "Atlas SMS" in answer
    answer = look_up("PROMO-FLASH")
    assert "PROMO-FLASH n'est pas un expéditeur déclaré." in answer and "CNDP" in answer
    shot(browser, "senders-3-undeclared-fr")

    french = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.LINK_TEXT, "العربية").click()
    WebDriverWait(browser, 15).until(replaced(french), "the Arabic page never came")
    html = browser.find_element(By.TAG_NAME, "html")
    assert (html.get_attribute("lang"), html.get_attribute("dir")) == ("ar", "rtl")
    assert "PROMO-FLASH ليس مرسلا مصرحا به." in visible_text(browser, "answer")
    shot(browser, "senders-4-undeclared-ar")
    answer = look_up(short_code)
    assert "Souk Online مرسل مصرح به." in answer and "مرخص" in answer
    assert short_code in answer and "STOP" in answer
    shot(browser, "senders-5-declared-ar")
    assert NUMBER not in browser.page_source
