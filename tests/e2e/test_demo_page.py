"""The demo page end to end: headless Chromium, the real broker, a real worker, nothing mocked.

A fresh customer opens ``/demo``, grants consent with the switches, browses one category and sees
an offer of that category rise with the personalized indicator; revoking ``personalize`` makes
the answer contextual at once; "Not interested" removes an offer for good (it shows up in the
filtered list as ``dismissed``); "Erase me" shows the receipt. A worker started with access keys
makes the page ask for them. Screenshots of each step go to ``artifacts/e2e/``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from stream.embedded.process import EmbeddedBroker
from tests.e2e.conftest import PHONE
from tests.integration.workers import WorkerProcess, worker_with_offers

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

BROWSED = "PRODUCE"
OFFERS = {
    "grocery-10": {"title": "10% off your grocery basket", "category": "GROCERY", "kind": "discount",
                   "discount_pct": 10},
    "grocery-pantry": {"title": "Pantry bundle: 3 for 2", "category": "GROCERY", "kind": "bundle",
                       "discount_pct": 5},
    "produce-5": {"title": "5% off fresh produce", "category": "PRODUCE", "kind": "discount",
                  "discount_pct": 5},
    "produce-points": {"title": "Double points on produce", "category": "PRODUCE", "kind": "loyalty"},
    "drug-15": {"title": "15% off vitamins", "category": "DRUG GM", "kind": "discount",
                "discount_pct": 15, "requires": ["marketing"]},
    "partner-fuel": {"title": "10% off at our fuel partner", "category": "KIOSK-GAS", "kind": "partner",
                     "discount_pct": 10, "requires": ["sharing"]},
}
API_KEY, SCORE_KEY = "e2e-api-key", "e2e-score-key"

OFFERS_JS = """
return [...document.querySelectorAll('#offer-list li.offer')].map(li => ({
  offer_id: li.dataset.offerId, rank: Number(li.dataset.rank), score: Number(li.dataset.score),
  category: li.dataset.category, personalized: li.dataset.personalized,
  reasons: [...li.querySelectorAll('.reasons li')].map(r => r.textContent)}));
"""
FILTERED_JS = """
return Object.fromEntries([...document.querySelectorAll('#filtered-list li')]
  .map(li => [li.dataset.offerId, li.dataset.reason]));
"""


@pytest.fixture(scope="module")
def worker(broker: EmbeddedBroker, trained_registry: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with worker_with_offers(broker.url, tmp_path_factory.mktemp("e2e-w"), OFFERS, app_id="e2e-demo",
                            registry=trained_registry) as w:
        yield w


@pytest.fixture(scope="module")
def locked_worker(broker: EmbeddedBroker, trained_registry: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with worker_with_offers(broker.url, tmp_path_factory.mktemp("e2e-locked"),
                            {o: OFFERS[o] for o in ("grocery-10", "produce-5")}, app_id="e2e-locked",
                            registry=trained_registry,
                            env={"OFFERSTREAM_API_KEY": API_KEY, "OFFERSTREAM_SCORE_KEY": SCORE_KEY}) as w:
        yield w


class Page:
    """What the test reads from and does on the demo page (only through the DOM)."""

    def __init__(self, driver: Any, worker: WorkerProcess) -> None:
        self.driver, self.worker = driver, worker

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(lambda _d: predicate())
        except TimeoutException:
            status = self.driver.find_element(By.ID, "status").text
            status += f"; profile events shown: {self.find('#stored-events').text}"
            logs = [entry["message"] for entry in self.driver.get_log("browser")][-10:]
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; page status: {status!r}; "
                                 f"console: {logs}; worker log:\n{self.worker.log_tail(15)}") from None

    def find(self, css: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def attr(self, css: str, name: str) -> str | None:
        return self.find(css).get_attribute(name)

    def offers(self) -> list[dict[str, Any]]:
        return self.driver.execute_script(OFFERS_JS)

    def filtered(self) -> dict[str, str]:
        return self.driver.execute_script(FILTERED_JS)

    def refreshes(self) -> int:
        return int(self.attr("#offers", "data-refreshes") or 0)

    def epoch(self) -> int:
        return int(self.attr("#consent-flags", "data-epoch") or 0)

    def switch(self, flag: str) -> Any:
        return self.find(f"#flag-{flag}")

    def toggle(self, flag: str, *, keyboard: bool = False) -> None:
        """Flip one consent switch and wait until the server's answer is on the page."""
        box, epoch = self.switch(flag), self.epoch()
        wanted = not box.is_selected()
        if keyboard:
            box.send_keys(Keys.SPACE)
        else:
            box.click()
        self.wait(lambda: self.epoch() == epoch + 1 and box.is_enabled() and box.is_selected() == wanted,
                  f"consent {flag}={wanted} stored (epoch {epoch + 1})")

    def stored_events(self) -> str:
        return self.find("#stored-events").text


def test_demo_page_consent_personalization_dismiss_and_erase(
        browser: Any, worker: WorkerProcess, screenshot: Callable[[str], Path]) -> None:
    page = Page(browser, worker)
    browser.get(f"{worker.url}/demo")
    page.wait(lambda: page.attr("body", "data-ready") == "true", "the page to load catalogue and offers")

    # The shop is built from the catalogue's categories; a guest id is prefilled.
    categories = {e.get_attribute("data-category") for e in browser.find_elements(By.CSS_SELECTOR, "section.category")}
    assert categories == {o["category"] for o in OFFERS.values()}
    assert page.attr("#customer-id", "value").startswith("guest-")
    screenshot("01-loaded")

    # A fresh customer: nothing stored, contextual offers, consent-gated offers filtered.
    customer = f"e2e-{uuid.uuid4().hex[:8]}"
    box = page.find("#customer-id")
    box.clear()
    box.send_keys(customer, Keys.ENTER)
    page.wait(lambda: page.attr("#offers", "data-customer-id") == customer
              and page.find("#current-customer").text == customer, "the new customer's offers")
    Select(page.find("#k")).select_by_value("10")  # show every eligible offer
    page.wait(lambda: len(page.offers()) == 4, "all four eligible offers shown")
    assert page.attr("#offers", "data-personalized") == "false"
    assert page.find("#consent-summary").text == "nothing stored (all off)"
    assert page.filtered() == {"drug-15": "consent:marketing", "partner-fuel": "consent:sharing"}
    assert page.attr("#offers", "data-model-version") != "fallback-popularity"

    # Consent through the switches (one of them with the keyboard).
    page.toggle("profile")
    page.toggle("personalize", keyboard=True)
    page.toggle("marketing")
    assert page.epoch() == 3
    assert "granted: profile, personalize, marketing" in page.find("#consent-summary").text
    page.wait(lambda: "drug-15" in {o["offer_id"] for o in page.offers()}, "the marketing offer allowed")
    assert page.filtered() == {"partner-fuel": "consent:sharing"}
    baseline = {o["offer_id"]: o for o in page.offers()}
    screenshot("02-consent-granted")

    # Some shopping in store across the shop, then browsing one category on the web.
    def act(action: str, category: str, index: int = 0) -> None:
        done = len(browser.find_elements(By.CSS_SELECTOR, "#event-log li.ok"))
        tile = browser.find_elements(By.CSS_SELECTOR, f"li.tile[data-category='{category}']")[index]
        tile.find_element(By.CSS_SELECTOR, f"button[data-action='{action}']").click()
        page.wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#event-log li.ok")) == done + 1,
                  f"{action} in {category} accepted")

    def settled_offers(n_events: int) -> dict[str, dict[str, Any]]:
        page.wait(lambda: page.stored_events() == str(n_events), f"{n_events} events in the profile")
        before = page.refreshes()
        page.find("#refresh").click()  # an answer computed after the profile shown
        page.wait(lambda: page.refreshes() > before, "a refreshed answer")
        return {o["offer_id"]: o for o in page.offers()}

    for action, category, index in [("store", "GROCERY", 0), ("store", "GROCERY", 1),
                                    ("store", "DRUG GM", 0), ("buy", BROWSED, 0)]:
        act(action, category, index)
    baseline = settled_offers(4)
    assert page.attr("#offers", "data-personalized") == "true"
    assert "purchase · store" in page.find("#event-log").text

    views = [("view", 0), ("view", 1), ("cart", 0), ("view", 0), ("view", 1)]
    for action, index in views:
        act(action, BROWSED, index)
    after = settled_offers(4 + len(views))
    assert page.attr("#offers", "data-personalized") == "true"
    assert all(o["personalized"] == "true" for o in after.values())
    browsed = sorted((o for o in after.values() if o["category"] == BROWSED), key=lambda o: o["rank"])
    assert browsed
    rise = {o["offer_id"]: o["score"] - baseline[o["offer_id"]]["score"] for o in browsed}
    assert max(rise.values()) > 0, f"no {BROWSED} offer rose: before {baseline}, after {after}"
    assert any(f"you often shop {BROWSED}" in reason for reason in browsed[0]["reasons"]), browsed[0]
    assert any(f"matches {BROWSED} in your cart" in reason for reason in browsed[0]["reasons"])
    assert page.find("#personalized-badge").text == "Personalized for you"
    print(f"\n{BROWSED} offers after browsing {BROWSED}: " + ", ".join(
        f"{o['offer_id']} rank {baseline[o['offer_id']]['rank']}->{o['rank']} "
        f"score {baseline[o['offer_id']]['score']:.4f}->{o['score']:.4f}" for o in browsed))
    screenshot("03-personalized")

    # Revoke personalize: the very next answer is contextual.
    page.toggle("personalize")
    page.wait(lambda: page.attr("#offers", "data-personalized") == "false", "a contextual answer")
    contextual = page.offers()
    assert all(o["personalized"] == "false" for o in contextual)
    assert not any("you often shop" in r or "in your cart" in r for o in contextual for r in o["reasons"])
    assert page.find("#personalized-badge").text == "Not personalized (contextual)"
    screenshot("04-personalize-revoked")

    # "Not interested" on the top offer: gone from the offers, filtered as dismissed, for good.
    dismissed = contextual[0]["offer_id"]
    page.find(f"#offer-list button[data-action='dismiss'][data-offer-id='{dismissed}']").click()
    page.wait(lambda: page.filtered().get(dismissed) == "dismissed"
              and dismissed not in {o["offer_id"] for o in page.offers()}, f"{dismissed} dismissed")
    for _ in range(2):
        before = page.refreshes()
        page.find("#refresh").click()
        page.wait(lambda b=before: page.refreshes() > b, "a refreshed answer")
        assert dismissed not in {o["offer_id"] for o in page.offers()}
        assert page.filtered()[dismissed] == "dismissed"
    assert page.find("#filtered-count").text == "2 offers"
    assert OFFERS[dismissed]["title"] in page.find("#stored-dismissed").text
    page.find("#filtered-box summary").click()
    screenshot("05-dismissed")

    # Erase me: the receipt names each store; afterwards nothing is stored.
    page.find("#erase").click()
    page.wait(lambda: page.attr("#erase-receipt", "data-erased") == "true", "the erasure receipt")
    stores = {e.get_attribute("data-store"): e.text
              for e in browser.find_elements(By.CSS_SELECTOR, "#erase-receipt li[data-store]")}
    assert {"profiles", "consent"} <= set(stores), stores
    assert all(stores[s].startswith(f"{s}: removed") for s in ("profiles", "consent")), stores
    page.wait(lambda: page.find("#consent-summary").text == "nothing stored (all off)", "consent gone")
    assert not any(page.switch(flag).is_selected() for flag in ("profile", "personalize", "marketing"))
    assert page.worker.client.request("GET", f"/v1/customers/{customer}")[0] == 404
    screenshot("06-erased")

    # The same page on a phone-sized screen: one column, offers right after the customer.
    browser.set_window_size(*PHONE)
    page.wait(lambda: browser.execute_script("return document.documentElement.clientWidth") <= PHONE[0],
              "the phone-sized viewport")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= PHONE[0], f"the page scrolls sideways on a phone ({width} px)"
    customer_box = page.find(".p-customer").rect
    offers_box = page.find(".p-offers").rect
    assert offers_box["y"] > customer_box["y"] and abs(offers_box["x"] - customer_box["x"]) < 2
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot("07-phone", full=False)
    screenshot("07-phone-full-page")


def test_demo_page_asks_for_keys_on_401(browser: Any, locked_worker: WorkerProcess,
                                        screenshot: Callable[[str], Path]) -> None:
    page = Page(browser, locked_worker)
    browser.get(f"{locked_worker.url}/demo")
    page.wait(lambda: page.find("#auth").is_displayed(), "the access-key form")
    assert "401" in page.find("#auth").text
    assert "401" in page.find("#status").text
    assert page.driver.switch_to.active_element.get_attribute("id") == "api-key"
    screenshot("08-keys-required")
    page.find("#api-key").send_keys(API_KEY)
    page.find("#score-key").send_keys(SCORE_KEY, Keys.ENTER)
    page.wait(lambda: page.attr("body", "data-ready") == "true" and not page.find("#auth").is_displayed(),
              "the page to load with the keys")
    shown = {o["offer_id"] for o in page.offers()}  # the catalogue topic is shared on this broker
    assert {"grocery-10", "produce-5"} <= shown <= set(OFFERS) - {"partner-fuel", "drug-15"}
    page.toggle("profile")
    assert "granted: profile" in page.find("#consent-summary").text
