"""The CNDP's console in a real headless browser presenting the regulator's client certificate.

Chromium gets the platform's CA and the ``cndp`` certificate in its own NSS database, and a
managed policy that selects that certificate for the console's address (what a CNDP
workstation's administrator sets up); the console asks for it on every connection. The staff
member reads the cases ranked, a case's timeline, the search and the compliance table with its
chart, in French and in Arabic; a screenshot of each is saved under
``test-output/screenshots`` (or ``$STOPSMS_TEST_OUTPUT``). Another party's certificate gets a
403 page, and no certificate gets no page at all.
"""

from __future__ import annotations

import io
import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    load_pem_private_key,
    pkcs12,
)
from cryptography.x509 import load_pem_x509_certificate
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from stopsms.adapters.clients import STUBS
from stopsms.domain.evidence import ExportSigner, load_public_key, verify
from stopsms.tools.demo_parties import DemoParties
from stopsms.tools.launcher import LocalInfrastructure
from stopsms.tools.local_platform import DEFAULT_PORTS, LocalPlatform
from stopsms.v1 import events_pb2, intake_pb2

from ..conftest import E2E_PARTIES, until
from .conftest import KAFKA_USERS
from .test_link_page_browser import visible_text, wait_for_text

pytestmark = pytest.mark.e2e
SCREENSHOTS = (
    Path(os.environ.get("STOPSMS_TEST_OUTPUT", Path(__file__).parents[2] / "test-output"))
    / "screenshots"
)
POLICIES = Path("/etc/chromium/policies/managed")


@pytest.fixture
def platform(infra: LocalInfrastructure, namespace: str, tmp_path: Path) -> Iterator[LocalPlatform]:
    local = LocalPlatform(
        tmp_path / "platform",
        namespace=namespace,
        shared_infra=infra,
        parties_file=E2E_PARTIES,
        senders_seed=None,
        preferred_ports={name: 0 for name in DEFAULT_PORTS},
        kafka_users=KAFKA_USERS,
    )
    local.start()
    try:
        yield local
    finally:
        local.stop()


def nss_home(tls: Path, party: str, home: Path) -> Path:
    """A HOME whose NSS database trusts the platform's CA and holds ``party``'s certificate."""
    database = home / ".pki" / "nssdb"
    database.mkdir(parents=True)
    store = f"sql:{database}"
    subprocess.run(["certutil", "-N", "-d", store, "--empty-password"], check=True)
    subprocess.run(
        ["certutil", "-A", "-d", store, "-n", "stopsms-ca", "-t", "C,,", "-i", str(tls / "ca.pem")],
        check=True,
    )
    bundle = pkcs12.serialize_key_and_certificates(
        party.encode(),
        load_pem_private_key((tls / "parties" / f"{party}.key").read_bytes(), None),
        load_pem_x509_certificate((tls / "parties" / f"{party}.pem").read_bytes()),
        None,
        BestAvailableEncryption(b"transfer"),
    )
    (home / f"{party}.p12").write_bytes(bundle)
    subprocess.run(
        ["pk12util", "-d", store, "-i", str(home / f"{party}.p12"), "-W", "transfer"],
        check=True,
        capture_output=True,
    )
    return home


@pytest.fixture
def browser(platform: LocalPlatform, tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """Chromium with the regulator's certificate, selected for the console by policy."""
    assert platform.tls_folder is not None
    home = nss_home(platform.tls_folder, "cndp", tmp_path / "home")
    origin = platform.endpoints["console_http"].rstrip("/")
    policy = POLICIES / f"stopsms-console-test-{uuid.uuid4().hex[:8]}.json"
    try:
        POLICIES.mkdir(parents=True, exist_ok=True)
        policy.write_text(
            json.dumps(
                {"AutoSelectCertificateForUrls": [json.dumps({"pattern": origin, "filter": {}})]}
            )
        )
    except OSError as exc:
        pytest.fail(f"cannot write Chromium's managed policy {policy} (run as root): {exc}")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    service = Service("/usr/bin/chromedriver", env={**os.environ, "HOME": str(home)})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        policy.unlink(missing_ok=True)


def shot(driver: webdriver.Chrome, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def fetch(platform: LocalPlatform, path: str, party: str | None) -> tuple[int, bytes]:
    """GET a console page as a party's certificate (None: without one)."""
    assert platform.tls_folder is not None
    tls = platform.tls_folder
    context = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    if party is not None:
        context.load_cert_chain(tls / "parties" / f"{party}.pem", tls / "parties" / f"{party}.key")
    url = platform.endpoints["console_http"] + path.lstrip("/")
    try:
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


async def test_the_cndp_reads_cases_timelines_search_and_compliance_in_its_browser(
    platform: LocalPlatform, browser: webdriver.Chrome
) -> None:
    channel, metadata = platform.channel("intake", "iam")
    intake = STUBS["intake"](channel)
    parties = DemoParties.for_platform(platform).start()
    try:
        # An opt-out the operator and the PSVAs apply (the compliance table has a day), and
        # five complaints about an undeclared sender (an informal-sector case).
        await intake.SubmitOptOut(
            intake_pb2.SubmitOptOutRequest(
                request_id="web-1", msisdn="0661000111", channel=events_pb2.CHANNEL_WEB
            ),
            metadata=metadata,
        )
        references = []
        for n in range(5):
            reply = await intake.SubmitComplaint(
                intake_pb2.SubmitComplaintRequest(
                    request_id=f"spamco-{n}",
                    msisdn=f"066100022{n}",
                    from_address="SPAMCO",
                    text="SPAM Gagnez un iPhone, شكاية",
                ),
                metadata=metadata,
            )
            references.append(reply.reference)
        await channel.close()

        console = platform.endpoints["console_http"]

        async def case_listed() -> bool:
            browser.get(console + "?lang=fr")
            listed = browser.find_elements(By.ID, "cases")
            return bool(listed) and "SPAMCO" in listed[0].text

        await until(case_listed, "the informal-sector case against SPAMCO on the console's page")
        assert "Secteur informel" in browser.find_element(By.ID, "cases").text
        assert "SPAMCO" in browser.find_element(By.ID, "informal").text
        shot(browser, "console-cases-fr")
        browser.get(console + "?lang=ar")
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl"
        assert "الملفات" in browser.find_element(By.TAG_NAME, "body").text
        shot(browser, "console-cases-ar")

        # A case's timeline, and its export buttons.
        browser.get(console + "?lang=fr")
        browser.find_element(By.PARTIAL_LINK_TEXT, "CASE-").click()
        wait_for_text(browser, "Chronologie")
        body = visible_text(browser)
        assert "Chronologie" in body and references[0] in body
        assert "+212 6•• •• •• 2" in body  # the complainants' numbers, masked
        export = browser.find_element(By.ID, "export")
        assert "ZIP" in export.text
        assert "Copie du parquet" not in export.text  # cndp may not export numbers in full
        case_url = browser.current_url.split("?")[0]
        shot(browser, "console-case-fr")

        # The search by a complaint's reference: the citizen's history and who looked.
        browser.get(console + "search?lang=fr")
        browser.find_element(By.ID, "q").send_keys(references[0])
        browser.find_element(By.CSS_SELECTOR, "form button").click()
        wait_for_text(browser, "Sujet (pseudonyme)")
        assert visible_text(browser, "subject")
        assert references[0] in browser.find_element(By.ID, "complaints").text

        async def looked_at() -> bool:
            browser.get(console + f"search?lang=fr&q={references[0]}")
            return "GetCase" in browser.find_element(By.ID, "audit").text

        await until(looked_at, "the staff member's look at the case in the citizen's audit trail")
        shot(browser, "console-search-fr")

        # Compliance per party, with the chart of propagation times.
        async def applied_by_everyone() -> bool:
            browser.get(console + "compliance?lang=fr")
            rows = browser.find_element(By.ID, "compliance").text
            return "iam 1" in rows and "atlas-sms 1" in rows

        await until(applied_by_everyone, "the opt-out applied by iam and atlas-sms in the table")
        assert browser.find_elements(By.ID, "chart")
        shot(browser, "console-compliance-fr")
        browser.get(console + "compliance?lang=ar")
        shot(browser, "console-compliance-ar")
    finally:
        parties.stop()

    # The export button's download: the signed pack, each document verifying against the
    # platform's export key.
    path = case_url.split("://", 1)[1].split("/", 1)[1]
    status, body = fetch(platform, f"{path}/export.zip", "cndp")
    assert status == 200
    key = load_public_key(ExportSigner.load(platform.data_dir / "keys" / "export.pem").public_pem())
    with zipfile.ZipFile(io.BytesIO(body)) as pack:
        names = sorted(pack.namelist())
        assert len(names) == 4
        documents = [n for n in names if not n.endswith(".sig")]
        assert {n.rsplit(".", 1)[1] for n in documents} == {"json", "pdf"}
        for name in documents:
            assert verify(pack.read(name), pack.read(name + ".sig"), key)
    status, _ = fetch(platform, f"{path}/export.zip?full=1", "cndp")
    assert status == 403  # the prosecutor's copy is another identity's
    # Another party's certificate gets a refusal; no certificate gets no page.
    status, page = fetch(platform, "/", "atlas-sms")
    assert status == 403 and b"regulator" in page
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        fetch(platform, "/", None)
