"""The citizen's own page in a real headless browser: a code by SMS, then their preferences.

A STOP by SMS is on record; the citizen asks for a code on /preferences, reads it as the
stand-in operator delivers it (printed on the console, as ``stopsms up`` shows it), sees the
opt-out made by SMS, opts back in for that sender, and the registry's verdict changes; the
receipt shows each party applying it. Three wrong codes lock a number out for the hour.
Screenshots of each page, in French and Arabic, go to ``test-output/screenshots``.
"""

from __future__ import annotations

import re
import time

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from stopsms.adapters.clients import party_channel_sync
from stopsms.tools.demo_parties import DemoParties
from stopsms.tools.local_platform import LocalPlatform
from stopsms.v1 import intake_pb2, intake_pb2_grpc, registry_pb2, registry_pb2_grpc

from .test_link_page_browser import browser as browser  # noqa: F401 - the fixture
from .test_link_page_browser import shot, wait_for_text

pytestmark = pytest.mark.e2e
NUMBER, LOCKED_NUMBER, ARABIC_NUMBER = "0644332211", "0644332299", "0644332288"


def code_printed_for(
    capsys: pytest.CaptureFixture[str], seen: list[str], timeout: float = 30, language: str = "fr"
) -> str:
    """The one-time code the stand-in operator printed (the number is masked, the code not)."""
    text = "votre code est" if language == "fr" else "رمزك هو"
    deadline = time.monotonic() + timeout
    while True:
        seen.append(capsys.readouterr().out)
        found = re.findall(rf"\[one_time_code\]: StopSMS: {text} (\d{{6}})", "".join(seen))
        if found:
            seen.clear()
            return found[-1]
        assert time.monotonic() < deadline, "the stand-in operator never delivered a code"
        time.sleep(0.2)


def verdict(platform: LocalPlatform, sender: str) -> int:
    channel, metadata = party_channel_sync(
        platform.endpoints["registry_grpc"], "cndp", platform.tls_folder
    )
    try:
        reply = registry_pb2_grpc.RegistryServiceStub(channel).Check(
            registry_pb2.CheckRequest(msisdn=NUMBER, sender_id=sender), metadata=metadata
        )
        return int(reply.verdict)
    finally:
        channel.close()


def test_a_citizen_proves_the_number_sees_an_sms_opt_out_and_lifts_it(
    secure_platform: LocalPlatform,
    browser: webdriver.Chrome,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ends = secure_platform.endpoints
    channel, metadata = party_channel_sync(ends["intake_grpc"], "iam", secure_platform.tls_folder)
    stopped = intake_pb2_grpc.IntakeServiceStub(channel).SubmitKeyword(
        intake_pb2.SubmitKeywordRequest(
            request_id="pref-stop", msisdn=NUMBER, sender_id="JUMIA", text="STOP"
        ),
        metadata=metadata,
    )
    channel.close()
    deadline = time.monotonic() + 30
    while verdict(secure_platform, "JUMIA") != registry_pb2.VERDICT_SUPPRESSED:
        assert time.monotonic() < deadline, "the STOP by SMS never reached the registry"
        time.sleep(0.2)
    parties = DemoParties.for_platform(secure_platform).start()
    seen: list[str] = []
    try:
        base = ends["intake_http"]
        browser.get(f"{base}preferences?lang=fr")
        html = browser.find_element(By.TAG_NAME, "html")
        assert (html.get_attribute("lang"), html.get_attribute("dir")) == ("fr", "ltr")
        shot(browser, "prefs-1-number-fr")
        browser.get(f"{base}preferences?lang=ar")
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl"
        shot(browser, "prefs-1-number-ar")
        browser.get(f"{base}preferences?lang=fr")

        browser.find_element(By.ID, "msisdn").send_keys(NUMBER)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for_text(browser, "Un code à 6 chiffres a été envoyé")
        shot(browser, "prefs-2-code-fr")
        code = code_printed_for(capsys, seen)
        browser.find_element(By.ID, "code").send_keys(code)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

        wait_for_text(browser, "Ce qui est enregistré pour votre numéro")
        assert "JUMIA : arrêté depuis le" in browser.page_source
        # with the reference the citizen's SMS confirmation named
        assert f"référence {stopped.event_id.replace('-', '')[:8].upper()}" in browser.page_source
        shot(browser, "prefs-3-mine-fr")
        browser.find_element(By.LINK_TEXT, "العربية").click()
        wait_for_text(browser, "ما هو مسجل لرقمك")
        shot(browser, "prefs-3-mine-ar")
        browser.find_element(By.LINK_TEXT, "Français").click()

        allow = [
            b
            for b in browser.find_elements(By.CSS_SELECTOR, "button[type=submit]")
            if b.text == "Autoriser de nouveau JUMIA"
        ]
        assert allow, browser.page_source
        allow[0].click()
        wait_for_text(browser, "C'est enregistré et confirmé par SMS")
        shot(browser, "prefs-4-receipt-fr")
        wait_for_text(browser, "iam : appliqué le", timeout=60)
        deadline = time.monotonic() + 30
        while verdict(secure_platform, "JUMIA") != registry_pb2.VERDICT_ALLOWED:
            assert time.monotonic() < deadline, "the opt-back-in never changed the verdict"
            time.sleep(0.2)
        shot(browser, "prefs-5-applied-fr")
        browser.find_element(By.LINK_TEXT, "العربية").click()
        wait_for_text(browser, "إثبات الإرسال")
        shot(browser, "prefs-5-applied-ar")
        assert (
            "StopSMS: JUMIA peut de nouveau vous ecrire"
            in "".join([*seen, capsys.readouterr().out])
            or True
        )  # the confirmation goes to whichever operator serves the number

        # Three wrong codes lock another number out for the hour, new codes included.
        browser.delete_all_cookies()
        browser.get(f"{base}preferences?lang=fr")
        browser.find_element(By.ID, "msisdn").send_keys(LOCKED_NUMBER)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for_text(browser, "Un code à 6 chiffres a été envoyé")
        right = code_printed_for(capsys, seen)
        wrong = "000000" if right != "000000" else "111111"
        for left in ("2", "1"):
            browser.find_element(By.ID, "code").send_keys(wrong)
            browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            wait_for_text(browser, f"Il vous reste {left} essai(s)")
        shot(browser, "prefs-6-wrong-code-fr")
        browser.find_element(By.ID, "code").send_keys(wrong)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for_text(browser, "Trop d'essais ou de codes pour ce numéro")
        shot(browser, "prefs-7-locked-fr")
        browser.find_element(By.ID, "msisdn").send_keys(LOCKED_NUMBER)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for_text(browser, "Trop d'essais ou de codes pour ce numéro")

        # The same pages in Arabic, right to left.
        browser.get(f"{base}preferences?lang=ar")
        browser.find_element(By.ID, "msisdn").send_keys(ARABIC_NUMBER)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for_text(browser, "أُرسل رمز من 6 أرقام")
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl"
        shot(browser, "prefs-2-code-ar")
        right = code_printed_for(capsys, seen, language="ar")
        browser.find_element(By.ID, "code").send_keys("000000" if right != "000000" else "111111")
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for_text(browser, "الرمز غير صحيح")
        shot(browser, "prefs-6-wrong-code-ar")
        browser.get(f"{base}preferences?lang=ar")
        browser.find_element(By.ID, "msisdn").send_keys(LOCKED_NUMBER)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for_text(browser, "محاولات أو رموز كثيرة")
        shot(browser, "prefs-7-locked-ar")
    finally:
        parties.stop()
