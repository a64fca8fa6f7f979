"""``/plainte`` in a real headless browser: a citizen complains on the web, with a screenshot.

The citizen opens /plainte, is sent to prove the number with a one-time code, then fills the
form — the sender as their phone showed it, the text, a screenshot whose metadata carries
their own number — and gets a reference. The complaint is on ``stopsms.complaints.v1`` as a
WEB complaint of ``citizen-web`` with only the screenshot's digest and location; the image in
the screenshot store has lost its metadata (the number included). A file that is not an image
is refused with the reason. Screenshots of the pages in French and Arabic go to
``test-output/screenshots``.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import zlib
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from stopsms.adapters.kafka import read_topic
from stopsms.domain.topics import Topics
from stopsms.tools.demo_parties import DemoParties
from stopsms.tools.local_platform import LocalPlatform
from stopsms.v1 import events_pb2

from .test_link_page_browser import browser as browser  # noqa: F401 - the fixture
from .test_link_page_browser import shot, wait_for_text
from .test_preferences_browser import code_printed_for

pytestmark = pytest.mark.e2e
NUMBER, NUMBER_E164 = "0644552211", "+212644552211"


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def screenshot_with_metadata(path: Path) -> Path:
    """A small PNG whose text chunks name its owner's number, as a phone's might."""
    width, height = 4, 2
    rows = b"".join(b"\x00" + bytes([200, 30, 30]) * width for _ in range(height))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"tEXt", b"Author\x00" + NUMBER_E164.encode())
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return path


def test_a_citizen_files_a_complaint_with_a_screenshot_on_the_web(
    secure_platform: LocalPlatform,
    browser: webdriver.Chrome,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    base = secure_platform.endpoints["intake_http"]
    parties = DemoParties.for_platform(secure_platform).start()
    seen: list[str] = []
    try:
        # Without a session, /plainte leads to the proof of the number.
        browser.get(f"{base}plainte?lang=fr")
        browser.find_element(By.ID, "msisdn").send_keys(NUMBER)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for_text(browser, "Un code à 6 chiffres a été envoyé")
        browser.find_element(By.ID, "code").send_keys(code_printed_for(capsys, seen))
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for_text(browser, "Ce qui est enregistré pour votre numéro")
        browser.find_element(By.ID, "complain").click()
        wait_for_text(browser, "Signaler un SMS publicitaire")
        shot(browser, "complaint-1-form-fr")
        browser.get(f"{base}preferences/plainte?lang=ar")
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl"
        shot(browser, "complaint-1-form-ar")

        # A file that is not an image is refused, with the reason.
        browser.get(f"{base}preferences/plainte?lang=fr")
        not_an_image = tmp_path / "capture.png"
        not_an_image.write_bytes(b"GIF89a" + bytes(64))
        browser.find_element(By.ID, "sender").send_keys("PROMOFLASH")
        browser.find_element(By.ID, "text").send_keys("Promo flash -70%, appelez vite")
        browser.find_element(By.ID, "screenshot").send_keys(str(not_an_image))
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for_text(browser, "only PNG and JPEG images are accepted")
        shot(browser, "complaint-2-refused-fr")

        # The complaint, with a screenshot whose metadata names the citizen's number.
        image = screenshot_with_metadata(tmp_path / "capture-ecran.png")
        browser.find_element(By.ID, "sender").send_keys("PROMOFLASH")
        browser.find_element(By.ID, "text").send_keys("Promo flash -70%, appelez vite")
        browser.find_element(By.ID, "received").send_keys("")  # left empty: now
        browser.find_element(By.ID, "screenshot").send_keys(str(image))
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for_text(browser, "est enregistrée")
        reference = browser.find_element(By.ID, "filed").text.split()[2]
        assert reference.startswith("SPAM-")
        shot(browser, "complaint-3-filed-fr")
    finally:
        parties.stop()

    records = asyncio.run(
        read_topic(secure_platform.endpoints["kafka"], Topics(secure_platform.namespace).complaints)
    )
    filed = [
        c
        for c in (events_pb2.ComplaintFiled.FromString(r.value) for r in records if r.value)
        if c.reference == reference
    ]
    assert len(filed) == 1
    complaint = filed[0]
    assert complaint.channel == events_pb2.CHANNEL_WEB and complaint.party_id == "citizen-web"
    assert complaint.sender_id == "PROMOFLASH"
    stored = secure_platform.data_dir / complaint.screenshot_location
    kept = stored.read_bytes()
    assert hashlib.sha256(kept).hexdigest() == complaint.screenshot_sha256
    assert stored.name == f"{complaint.screenshot_sha256}.png"
    # the picture is kept, the metadata (and the number in it) is not
    assert b"IDAT" in kept and b"tEXt" not in kept and NUMBER_E164.encode() not in kept
    for form in (NUMBER_E164, NUMBER, NUMBER_E164[1:]):
        assert form.encode() not in complaint.SerializeToString()
