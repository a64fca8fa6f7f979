"""The link page in a real headless browser (Debian's Chromium through Selenium).

A citizen opens a link, reads it in French and in Arabic, confirms, and watches the count of
operators and providers reach all of them; an expired link and a bad code get pages of their
own. A screenshot of each state is saved under ``test-output/screenshots`` (or
``$STOPSMS_TEST_OUTPUT``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from stopsms.adapters.clients import party_channel_sync
from stopsms.adapters.settings import Settings
from stopsms.domain.topics import Topics
from stopsms.intake.links import new_code
from stopsms.tools.demo_parties import DemoParties
from stopsms.tools.local_platform import LocalPlatform
from stopsms.v1 import events_pb2, intake_pb2, intake_pb2_grpc

pytestmark = pytest.mark.e2e
SCREENSHOTS = (
    Path(os.environ.get("STOPSMS_TEST_OUTPUT", Path(__file__).parents[2] / "test-output"))
    / "screenshots"
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=480,900",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: webdriver.Chrome, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def visible_text(driver: webdriver.Chrome, element_id: str | None = None) -> str:
    """The text of the page (or of one element), read again if the page refreshed meanwhile."""
    for _ in range(20):
        try:
            if element_id is None:
                return driver.find_element(By.TAG_NAME, "body").text
            return driver.find_element(By.ID, element_id).text
        except (StaleElementReferenceException, NoSuchElementException):
            time.sleep(0.1)  # the status page refreshes itself every two seconds
        except WebDriverException as exc:
            # Chrome's own word for an element of the page that was just replaced.
            if "does not belong to the document" not in str(exc):
                raise
            time.sleep(0.1)
    raise AssertionError("the page kept reloading")


def wait_for_text(driver: webdriver.Chrome, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in visible_text(driver):
        assert time.monotonic() < deadline, f"{text!r} never appeared:\n{driver.page_source[:2000]}"
        time.sleep(0.3)


def test_a_citizen_confirms_in_a_browser_and_sees_everyone_apply_it(
    secure_platform: LocalPlatform, browser: webdriver.Chrome
) -> None:
    ends = secure_platform.endpoints
    channel, metadata = party_channel_sync(
        ends["intake_grpc"], "atlas-sms", secure_platform.tls_folder
    )
    link = intake_pb2_grpc.IntakeServiceStub(channel).IssueStopLink(
        intake_pb2.IssueStopLinkRequest(msisdn="0655443322", sender_id="JUMIA"), metadata=metadata
    )
    channel.close()
    parties = DemoParties.for_platform(secure_platform).start()
    try:
        browser.get(link.url + "?lang=fr")
        html = browser.find_element(By.TAG_NAME, "html")
        assert (html.get_attribute("lang"), html.get_attribute("dir")) == ("fr", "ltr")
        button = browser.find_element(By.CSS_SELECTOR, "button[type=submit]")
        assert "JUMIA" in browser.page_source and "Ne plus recevoir les SMS de JUMIA" in button.text
        shot(browser, "1-confirm-fr")

        browser.find_element(By.LINK_TEXT, "العربية").click()
        html = browser.find_element(By.TAG_NAME, "html")
        assert (html.get_attribute("lang"), html.get_attribute("dir")) == ("ar", "rtl")
        assert (
            "إيقاف رسائل JUMIA" in browser.find_element(By.CSS_SELECTOR, "button[type=submit]").text
        )
        shot(browser, "2-confirm-ar")

        browser.find_element(By.LINK_TEXT, "Français").click()
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()  # confirm
        wait_for_text(browser, "C'est enregistré")
        assert f"{link.code}:opt_out" in browser.page_source
        shot(browser, "3-recorded")
        wait_for_text(browser, "Tous les opérateurs et prestataires concernés l'ont appliqué.")
        assert "1 opérateurs sur 1 et 1 prestataires sur 1" in visible_text(browser, "progress")
        # This browser made the opt-out: it alone is offered the undo (a one-time cookie).
        assert 'value="undo"' in browser.page_source
        shot(browser, "4-applied-by-all")

        # The link itself offers no opt-back-in to whoever holds it: START by SMS does.
        browser.get(link.url + "?lang=fr")
        assert 'value="opt_in"' not in browser.page_source
        assert "répondez <b>START</b> par SMS" in browser.page_source
        shot(browser, "5-opted-out-reply-start-to-undo")
    finally:
        parties.stop()


def test_an_expired_link_and_a_bad_code_are_not_dead_ends(
    secure_platform: LocalPlatform, browser: webdriver.Chrome
) -> None:
    settings = Settings.from_env({"STOPSMS_DATA_DIR": str(secure_platform.data_dir)})
    pseudonymiser = settings.pseudonymiser()
    expired = events_pb2.StopLink(
        code=new_code(),
        subject=pseudonymiser.subject("+212655443311"),
        sender_id="MARJANE",
        issuer_party_id="atlas-sms",
    )
    expired.sealed_msisdn.CopyFrom(pseudonymiser.seal("+212655443311"))
    expired.issued_time.FromDatetime(datetime.now(UTC) - timedelta(days=120))
    expired.expire_time.FromDatetime(datetime.now(UTC) - timedelta(days=30))
    producer = KafkaProducer(bootstrap_servers=secure_platform.endpoints["kafka"], acks="all")
    producer.send(
        Topics(secure_platform.namespace).links,
        key=expired.code.encode(),
        value=expired.SerializeToString(),
    ).get(timeout=10)
    producer.close()

    base = secure_platform.endpoints["intake_http"]
    browser.get(f"{base}{expired.code}?lang=fr")
    assert "Ce lien a expiré" in browser.page_source and "STOP" in browser.page_source
    assert "MARJANE" in browser.page_source
    shot(browser, "6-expired")
    browser.get(f"{base}{expired.code}?lang=ar")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl"
    shot(browser, "7-expired-ar")
    browser.get(f"{base}NotACode000?lang=fr")
    assert "n'existe pas" in browser.page_source
    shot(browser, "8-bad-code")
