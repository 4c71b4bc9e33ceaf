"""The edge's web page in a real headless Chromium (Debian's chromium + chromium-driver, driven by
selenium): load the page of a `fastbook-edge --web` process against a real sequencer, place an
order with the ticket, see it rest in the ladder and in "my open orders", cancel it with its
button, see the book without it, then stop the edge and see the page say it is disconnected.

With FASTBOOK_SCREENSHOTS=DIR the screenshot is also written to DIR/web.png (docs/web.png is one).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from fastbook.edge.client import Edge
from tests.support.brokers import Proc, free_port, program, wait_for
from tests.support.cluster import MARKET, Cluster

pytestmark = pytest.mark.broker

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster("mosquitto", tmp_path)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1050", f"--user-data-dir={tmp_path / 'chromium'}",
                "--no-first-run", "--disable-background-networking", "--disable-component-update"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


def text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def ladder_prices(driver: WebDriver, side: str) -> list[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, f"#{'bids' if side == 'buy' else 'asks'} tr")
    return [str(row.get_attribute("data-price")) for row in rows]


def open_orders(driver: WebDriver) -> list[list[str]]:
    """[id, side, price, qty] of each row of "my open orders", read in one script (one instant)."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#orders tr[data-id]')].map(tr => "
        "[tr.dataset.id, ...[...tr.cells].slice(1, 4).map(td => td.textContent)])")
    return [[str(cell) for cell in row] for row in rows]


def click(driver: WebDriver, selector: str) -> bool:
    driver.find_element(By.CSS_SELECTOR, selector).click()
    return True


def test_place_see_rest_cancel_in_chromium(cluster: Cluster, browser: WebDriver, tmp_path: Path) -> None:
    port = free_port()
    edge = Proc([program("fastbook-edge"), "--client-id", "web-alice", "--broker", cluster.url,
                 "--market", MARKET, "--no-tty", "--web", f"127.0.0.1:{port}"], tmp_path / "edge.log")
    cluster.edges["web-alice"] = edge
    try:
        wait_for(lambda: "web view at" in edge.output() or not edge.alive(), 20, "the edge's web view")
        assert edge.alive(), edge.output()
        # A book to look at: bob rests both sides, carol takes part of the best ask (a trade).
        with Edge("web-bob", cluster.url, MARKET) as bob, Edge("web-carol", cluster.url, MARKET) as carol:
            assert bob.wait_synced(30) and carol.wait_synced(30)
            for side, price, qty in [("sell", "101.00", "0.8"), ("sell", "101.50", "2"),
                                     ("sell", "102.25", "3.5"), ("buy", "99.50", "1.2"),
                                     ("buy", "99.00", "2.5"), ("buy", "98.00", "4")]:
                assert bob.submit(side=side, price=price, qty=qty).result(10)["type"] == "accepted"
            assert carol.submit(side="buy", type="market", qty="0.3").result(10)["type"] == "accepted"
            last = carol.submit(side="buy", price="100.50", qty="0.4").result(10)
            assert last["type"] == "accepted"
        cluster.wait_converged(["web-alice"], 30, last["seq"])

        browser.get(f"http://127.0.0.1:{port}/")
        # A view with new data rebuilds its section: an element found a moment ago can be gone.
        wait = WebDriverWait(browser, 30, poll_frequency=0.1,
                             ignored_exceptions=[StaleElementReferenceException])
        wait.until(lambda d: "verified against the log" in text(d, "proof-verified"))
        wait.until(lambda d: "same hash" in text(d, "proof-head"))
        assert text(browser, "page-link") == "page: live"
        assert text(browser, "broker-link") == "broker: connected"
        wait.until(lambda d: ladder_prices(d, "sell") == ["102.25", "101.50", "101.00"])
        assert ladder_prices(browser, "buy") == ["100.50", "99.50", "99.00", "98.00"]
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#trades tr"))
        assert "101.00" in text(browser, "trades") and "0.300" in text(browser, "trades")

        # The ticket: a resting buy below the best ask.
        browser.find_element(By.ID, "ticket-buy").click()
        browser.find_element(By.ID, "ticket-price").send_keys("100.00")
        browser.find_element(By.ID, "ticket-qty").send_keys("1.25")
        browser.find_element(By.ID, "ticket-submit").click()
        wait.until(lambda d: text(d, "ticket-result").startswith("ACCEPTED buy 1.250 @ 100.00"))
        wait.until(lambda d: open_orders(d) and open_orders(d)[0][1:] == ["buy", "100.00", "1.250"])
        order_id = open_orders(browser)[0][0]
        wait.until(lambda d: ladder_prices(d, "buy") == ["100.50", "100.00", "99.50", "99.00", "98.00"])

        def marked_mine(d: WebDriver) -> bool:
            row = d.find_element(By.CSS_SELECTOR, '#bids tr[data-price="100.00"]')
            return "has-mine" in str(row.get_attribute("class")) and "● 1.250" in row.text

        wait.until(marked_mine)
        browser.save_screenshot(str(tmp_path / "web.png"))
        assert (tmp_path / "web.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("FASTBOOK_SCREENSHOTS"):
            shutil.copy(tmp_path / "web.png", Path(os.environ["FASTBOOK_SCREENSHOTS"]) / "web.png")

        # Its cancel button: gone from my orders and from the book.
        wait.until(lambda d: click(d, f'#orders button.cancel[data-id="{order_id}"]'))
        wait.until(lambda d: text(d, "ticket-result").startswith(f"CANCELLED 1.250 {order_id} (user)"))
        wait.until(lambda d: open_orders(d) == [])
        wait.until(lambda d: ladder_prices(d, "buy") == ["100.50", "99.50", "99.00", "98.00"])
        assert "CANCELLED" in text(browser, "reports") and "ACCEPTED" in text(browser, "reports")

        # A bad order is answered on the page, and the page keeps working.
        browser.find_element(By.ID, "ticket-price").clear()
        browser.find_element(By.ID, "ticket-price").send_keys("100.005")
        browser.find_element(By.ID, "ticket-submit").click()
        wait.until(lambda d: text(d, "ticket-result").startswith("REJECTED new"))
        assert "INVALID_PRICE" in text(browser, "ticket-result")

        # The edge goes away: the page says so instead of showing a frozen book as live.
        edge.stop()
        wait.until(lambda d: text(d, "page-link") == "page: DISCONNECTED")
        assert browser.find_element(By.ID, "banner").is_displayed()
    finally:
        edge.stop()
