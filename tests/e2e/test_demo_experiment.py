"""The demo page shows which experiment arm served the customer (issue 15, item 7): headless
Chromium, a real broker and worker, an experiment set through the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from models.experiments import assign, parse_experiment
from tests.integration.workers import WorkerProcess, worker_with_offers

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

EXPERIMENT = {"holdout": 0.5, "control": "popular", "arms": [
    {"name": "popular", "share": 1.0, "policy": {"kind": "popularity"}}]}


@pytest.fixture(scope="module")
def worker(broker: Any, trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    offers = {offer_id: {"title": offer_id, "category": category, "kind": "discount", "discount_pct": 5}
              for offer_id, category in (("grocery-10", "GROCERY"), ("produce-5", "PRODUCE"))}
    with worker_with_offers(broker.url, tmp_path_factory.mktemp("e2e-exp"), offers, app_id="e2e-exp",
                            registry=trained_registry) as w:
        w.client.json("PUT", "/v1/experiments/demo-test", EXPERIMENT)
        yield w


def _arm_shown(driver: Any, customer: str, worker: WorkerProcess) -> str:
    box = driver.find_element(By.CSS_SELECTOR, "#customer-id")
    box.clear()
    box.send_keys(customer, Keys.ENTER)

    def shown(_: Any) -> Any:
        tags = driver.find_elements(By.CSS_SELECTOR, "#experiment-arm")
        current = driver.find_element(By.CSS_SELECTOR, "#offers").get_attribute("data-customer-id")
        return current == customer and tags and tags[0].get_attribute("data-arm") and tags[0]

    try:
        tag = WebDriverWait(driver, 15, poll_frequency=0.05).until(shown)
    except TimeoutException:
        raise AssertionError(f"no arm shown for {customer}; worker log:\n{worker.log_tail(15)}") from None
    assert tag.text.strip() == f"experiment demo-test: arm {tag.get_attribute('data-arm')}"
    return str(tag.get_attribute("data-arm"))


def test_the_demo_page_shows_the_arm(browser: Any, worker: WorkerProcess) -> None:
    experiment = parse_experiment(EXPERIMENT, "demo-test")
    consenting = [f"arm-{i}" for i in range(6)]
    for customer in consenting:
        worker.client.json("PUT", f"/v1/customers/{customer}/consent",
                           {"flags": {"profile": True, "personalize": True}})
    expected = {c: assign(experiment, c, personalize=True) for c in consenting}
    assert set(expected.values()) == {"holdout", "popular"}
    browser.get(f"{worker.url}/demo")
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    assert _arm_shown(browser, "arm-nobody", worker) == "not_eligible"  # no personalize: never in an arm
    for customer, arm in expected.items():
        assert _arm_shown(browser, customer, worker) == arm, customer
