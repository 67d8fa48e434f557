"""The browser kit end to end (issue 16, item 5): a shop's page on its own origin, in headless Chromium.

A small shop server (stdlib, another port = another origin) serves a page with a stub CMP of its
own that implements ``__tcfapi`` and loads nothing from outside: the only other script is the
kit, from the worker's ``/sdk/offerstream.js``. The worker runs with access keys, a token key and
the shop's origin in ``OFFERSTREAM_CORS_ORIGINS``; the page holds only a customer token, minted
the way the README tells a shop's backend to. The test grants consent through the CMP, revokes
it, and then sends GPC, and checks each effect on the offers the page shows; checks that events
queued by the page and sent when it is hidden arrive in the customer's profile; and checks that
customer A's token cannot read or write customer B (403, and B unchanged).
"""

from __future__ import annotations

import html
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.support.ui import WebDriverWait

from models.tcf import PublisherTC, TCString, VendorSet, encode_tc_string
from models.tokens import mint
from stream.embedded.process import EmbeddedBroker
from tests.e2e.test_demo_page import OFFERS
from tests.integration.workers import WorkerProcess, wait_until, worker_with_offers

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

TOKEN_KEY = "e2e-browser-kit-token-key-0123456789"  # noqa: S105 - a test key
KEYS = {"OFFERSTREAM_API_KEY": "e2e-kit-api-key", "OFFERSTREAM_SCORE_KEY": "e2e-kit-score-key"}
CREATED = datetime(2026, 6, 1, tzinfo=UTC)  # after 2026-02-28: TCF v2.3 rules, DisclosedVendors present


def tc_string(purposes: frozenset[int]) -> str:
    """A valid TCF v2.3 TC string granting ``purposes`` (what a CMP would hand over)."""
    return encode_tc_string(TCString(created=CREATED, last_updated=CREATED, purpose_consents=purposes,
                                     vendor_consents=VendorSet.of([755]), disclosed_vendors=VendorSet.of([755]),
                                     publisher_tc=PublisherTC()))


GRANT = tc_string(frozenset({1, 5, 6, 7, 8, 9, 10}))
NOTHING = tc_string(frozenset({1}))

STUB_CMP = """
(() => {
  // A stub consent management platform: the IAB TCF v2 __tcfapi commands a page's scripts use.
  let tc = %(tc)s;
  const listeners = new Map();
  let nextId = 1;
  const data = (status, id) => ({ tcString: tc, eventStatus: status, cmpStatus: "loaded", gdprApplies: true,
                                 tcfPolicyVersion: 5, listenerId: id });
  window.__tcfapi = (command, version, callback) => {
    if (version !== 2) return callback(null, false);
    if (command === "ping") return callback({ gdprApplies: true, cmpLoaded: true, cmpStatus: "loaded" }, true);
    if (command === "addEventListener") {
      const id = nextId++;
      listeners.set(id, callback);
      return setTimeout(() => callback(data("tcloaded", id), true), 0);
    }
    if (command === "removeEventListener") return callback(listeners.delete(arguments[3]), true);
    if (command === "getTCData") return callback(data("tcloaded"), true);
    return callback(null, false);
  };
  window.stubCmp = {
    choose(newTc) {  // the customer clicked in the consent banner
      tc = newTc;
      for (const [id, cb] of listeners) cb(data("useractioncomplete", id), true);
    },
  };
})();
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A shop</title>
<script>%(cmp)s</script></head>
<body><h1>A shop</h1><div id="offers"></div>
<script src="%(worker)s/sdk/offerstream.js"></script>
<script>
  const TITLES = %(titles)s;
  window.shop = Offerstream.init({
    token: %(token)s, container: "#offers", k: 10, impressions: false,
    label: (offer) => TITLES[offer.offer_id] || offer.offer_id,
    onOffers: () => { document.body.dataset.answers = String(Number(document.body.dataset.answers || 0) + 1); },
  });
</script></body></html>
"""

SHOWN_JS = """
const c = document.querySelector('#offers');
return {personalized: c.dataset.personalized, state: c.dataset.state || '',
        answers: Number(document.body.dataset.answers || 0),
        offers: [...c.querySelectorAll('li.offerstream-offer')].map(li => li.dataset.offerId)};
"""


class ShopServer:
    """The shop's own web server on another port (so another origin than the worker's)."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                page = pages.get(parse_qs(urlparse(self.path).query).get("p", [""])[0])
                body = (page or "not found").encode()
                self.send_response(200 if page else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def page(self, worker: WorkerProcess, token: str, tc: str, extra: str = "") -> str:
        """Publish a page for ``token`` whose CMP starts with ``tc`` (``extra``: more inline script); its URL."""
        name = uuid.uuid4().hex
        titles = {oid: o["title"] for oid, o in OFFERS.items()}
        self.pages[name] = PAGE % {"cmp": STUB_CMP % {"tc": json.dumps(tc)} + extra, "worker": html.escape(worker.url),
                                   "titles": json.dumps(titles), "token": json.dumps(token)}
        return f"{self.origin}/shop?p={name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def shop() -> Iterator[ShopServer]:
    server = ShopServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def worker(broker: EmbeddedBroker, trained_registry: Path, shop: ShopServer,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    env = {**KEYS, "OFFERSTREAM_TOKEN_KEY": TOKEN_KEY, "OFFERSTREAM_CORS_ORIGINS": shop.origin}
    with worker_with_offers(broker.url, tmp_path_factory.mktemp("e2e-kit"), OFFERS, app_id="e2e-kit",
                            registry=trained_registry, env=env) as w:
        yield w


class ShopPage:
    """The page as the test sees it: the offers shown, and the kit's own calls."""

    def __init__(self, driver: Any, worker: WorkerProcess) -> None:
        self.driver, self.worker = driver, worker

    def shown(self) -> dict[str, Any]:
        return self.driver.execute_script(SHOWN_JS)

    def wait(self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 20.0) -> dict[str, Any]:
        """Ask the kit for offers again until what the page shows satisfies ``predicate``."""
        def check(_driver: Any) -> dict[str, Any] | None:
            shown = self.shown()
            if shown["state"] == "ready" and predicate(shown):
                return shown
            self.driver.execute_script("window.shop && window.shop.refresh()")
            return None
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.3).until(check)
        except TimeoutException:
            logs = [e["message"] for e in self.driver.get_log("browser")][-10:]
            raise AssertionError(f"timed out waiting for {what}; shown {self.shown()}; console {logs}; "
                                 f"worker log:\n{self.worker.log_tail(15)}") from None

    def run(self, script: str, *args: Any) -> Any:
        """Run an async script (its last argument is the callback) and decode its JSON answer."""
        return json.loads(self.driver.execute_async_script(script, *args))


def customer(w: WorkerProcess, cid: str) -> dict[str, Any] | None:
    status, body = w.client.request("GET", f"/v1/customers/{cid}")
    return None if status == 404 else body


def n_events(w: WorkerProcess, cid: str) -> int:
    record = customer(w, cid)
    return int(((record or {}).get("profile") or {}).get("n_events", 0))


def flags(w: WorkerProcess, cid: str) -> dict[str, bool]:
    record = customer(w, cid)
    return record["consent"]["flags"] if record else {}


TRACK_JS = """
for (const [i, item] of arguments[0].entries()) {
  window.shop.track("product_view", {item_id: "p" + i, category: item, price: 1.5});
}
return true;
"""

FOREIGN_JS = """
const [other, own, workerUrl, token] = arguments;
const done = arguments[arguments.length - 1];
const c = window.shop.client;
const now = Date.now();
Promise.all([
  c.score({customer_id: other, k: 10}),
  c.send([{event_id: "fa-" + now, type: "page_view", ts: now, customer_id: own, url: "/"},
          {event_id: "fb-" + now, type: "product_view", ts: now, customer_id: other, item_id: "x",
           category: "PRODUCE"}]),
  c.send([{event_id: "fc-" + now, type: "consent", ts: now, customer_id: other,
           consent: {flags: {profile: false}}}]),
  fetch(workerUrl + "/v1/customers/" + encodeURIComponent(other), {headers: {"X-Offerstream-Token": token}})
    .then(r => ({status: r.status}), e => ({blocked: e.name})),
]).then(r => done(JSON.stringify(r)), e => done(JSON.stringify({error: String(e)})));
"""


def test_the_kit_on_a_shop_page_consent_events_offers_and_other_customers(
        browser: Any, worker: WorkerProcess, shop: ShopServer, screenshot: Callable[..., Path]) -> None:
    a, b = f"kit-a-{uuid.uuid4().hex[:6]}", f"kit-b-{uuid.uuid4().hex[:6]}"
    token = mint(a, TOKEN_KEY.encode(), ttl_s=900)  # what the shop's backend puts in the page
    page = ShopPage(browser, worker)

    # Nothing granted in the CMP: contextual offers; the partner offer needs `sharing`.
    browser.get(shop.page(worker, token, NOTHING))
    first = page.wait(lambda s: s["answers"] >= 1, "the first offers")
    assert first["personalized"] == "false"
    assert "partner-fuel" not in first["offers"] and "drug-15" not in first["offers"]
    assert set(first["offers"]) == {"grocery-10", "grocery-pantry", "produce-5", "produce-points"}
    wait_until(lambda: customer(worker, a) is not None, what="the CMP's first TC string stored as consent")
    assert flags(worker, a)["profile"] is False
    screenshot("kit-01-nothing-granted")

    # Grant: the customer accepts in the CMP banner, and the shop's own banner grants sharing.
    browser.execute_script(f"window.stubCmp.choose({json.dumps(GRANT)});"
                           "window.shop.setConsent({sharing: true, marketing: true});")
    wait_until(lambda: {k: v for k, v in flags(worker, a).items() if k in ("profile", "personalize", "sharing")}
               == {"profile": True, "personalize": True, "sharing": True}, what="the grants applied")
    assert customer(worker, a)["consent"]["sources"]["personalize"] == "tcf"
    granted = page.wait(lambda s: "partner-fuel" in s["offers"], "the sharing offer after the grant")
    assert "drug-15" in granted["offers"]

    # Events: queued by the page, sent when it is hidden (the customer leaves), then in the profile.
    browsed = ["PRODUCE"] * 4 + ["GROCERY"]
    browser.execute_script(TRACK_JS, browsed)
    assert n_events(worker, a) == 0  # batched: nothing sent yet
    browser.get("about:blank")  # pagehide: the kit sends the batch with a keepalive fetch
    wait_until(lambda: n_events(worker, a) == len(browsed), timeout=20, what="the events sent at page hide")
    profile = customer(worker, a)["profile"]
    assert profile["n_events"] == len(browsed)

    # Back on the shop with the profile: personalized offers.
    browser.get(shop.page(worker, token, GRANT))
    personalized = page.wait(lambda s: s["personalized"] == "true", "personalized offers")
    assert {"partner-fuel", "drug-15"} <= set(personalized["offers"])
    screenshot("kit-02-granted-personalized")

    # Revoke in the CMP: the very next answer is contextual (the score call carries the TC string).
    answers = page.shown()["answers"]
    browser.execute_script(f"window.stubCmp.choose({json.dumps(NOTHING)});")
    revoked = page.wait(lambda s: s["answers"] > answers, "the answer after the revocation", timeout=10)
    assert revoked["personalized"] == "false"
    wait_until(lambda: flags(worker, a)["personalize"] is False and (customer(worker, a) or {}).get("profile")
               is None, what="the revocation stored and the profile erased")
    assert "partner-fuel" in revoked["offers"]  # sharing was granted apart from TCF and still is
    screenshot("kit-03-revoked")

    # GPC: the browser sends Global Privacy Control; the partner (sharing) offer is gone.
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (
        "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true, configurable: true});")})
    browser.get(shop.page(worker, token, NOTHING))
    assert browser.execute_script("return navigator.globalPrivacyControl") is True
    gpc = page.wait(lambda s: s["answers"] >= 1, "offers with GPC")
    assert "partner-fuel" not in gpc["offers"] and gpc["personalized"] == "false"
    wait_until(lambda: flags(worker, a)["sharing"] is False, what="GPC stored: sharing off")
    assert customer(worker, a)["consent"]["sources"]["sharing"] == "gpc"
    screenshot("kit-04-gpc")

    # Customer A's token cannot read or write customer B.
    worker.client.json("PUT", f"/v1/customers/{b}/consent", {"flags": {"profile": True, "personalize": True}})
    worker.client.json("POST", "/v1/events", [{"event_id": f"b-{i}", "type": "product_view", "customer_id": b,
                                               "ts": 1_780_000_000_000 + i, "item_id": "i", "category": "DELI",
                                               "price": 3.0} for i in range(3)], expect=202)
    wait_until(lambda: n_events(worker, b) == 3, what="B's events")
    b_before, a_before = customer(worker, b), n_events(worker, a)
    answers = page.run(FOREIGN_JS, b, a, worker.url, token)
    assert [r.get("status") for r in answers[:3]] == [403, 403, 403], answers
    assert answers[0]["body"]["field"] == "customer_id" and answers[1]["body"]["field"] == "[1].customer_id"
    assert "blocked" in answers[3], answers[3]  # no CORS for GET /v1/customers: the page cannot even ask
    worker.client.json("POST", "/v1/events", {"event_id": f"b-sentinel-{uuid.uuid4().hex}", "type": "page_view",
                                              "customer_id": b, "ts": 1_780_000_001_000, "url": "/"}, expect=202)
    wait_until(lambda: n_events(worker, b) == 4, what="B's sentinel event")  # in order after anything forbidden
    b_after = customer(worker, b)
    assert b_after["consent"] == b_before["consent"] and b_after["profile"]["n_events"] == 4
    assert n_events(worker, a) == a_before


GTAG = """
window.dataLayer = window.dataLayer || [];
function gtag() { window.dataLayer.push(arguments); }
gtag("consent", "default", {ad_storage: "granted", analytics_storage: "granted", ad_personalization: "granted",
                            ad_user_data: "granted"});
"""


def test_the_kit_follows_google_consent_mode(browser: Any, worker: WorkerProcess, shop: ShopServer) -> None:
    c = f"kit-c-{uuid.uuid4().hex[:6]}"
    page = ShopPage(browser, worker)
    browser.get(shop.page(worker, mint(c, TOKEN_KEY.encode(), ttl_s=300), GRANT, GTAG))
    page.wait(lambda s: s["answers"] >= 1, "the first offers")
    browser.execute_script("window.shop.setConsent({sharing: true, marketing: true});")
    wait_until(lambda: flags(worker, c).get("personalize") is True and flags(worker, c).get("sharing") is True,
               what="TCF and the shop's grants stored")
    assert "partner-fuel" in page.wait(lambda s: "partner-fuel" in s["offers"], "the partner offer")["offers"]
    # The page's Consent Mode update: ad_personalization and ad_user_data denied.
    browser.execute_script('gtag("consent", "update", {ad_personalization: "denied", ad_user_data: "denied"});')
    wait_until(lambda: flags(worker, c)["personalize"] is False and flags(worker, c)["sharing"] is False,
               what="the Consent Mode update stored")
    sources = customer(worker, c)["consent"]["sources"]
    assert (sources["personalize"], sources["marketing"], sources["sharing"]) == ("gcm", "gcm", "gcm")
    assert flags(worker, c)["profile"] is True  # Consent Mode only restricts what it names
    after = page.wait(lambda s: "partner-fuel" not in s["offers"], "the partner offer gone")
    assert "drug-15" not in after["offers"] and after["personalized"] == "false"
