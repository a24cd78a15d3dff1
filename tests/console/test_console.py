#!/usr/bin/env python3
"""The operations console (GET /console) in a real browser: headless Chromium driven by
Selenium against the real release `orderd` (bound to port 0, a temporary data directory).

`make console-test` (part of `make test`) runs it. It signs in, sees both shards, restarts one
and watches it run again, creates a backup and drills it, has one admin request a change and
an admin of another owner approve and apply it, reads an order whose note, customer name and
shipment event hold script canaries (rendered as text, nothing injected, no alert), pages the
audit trail, lifts a quarantined command on a second server whose failpoints are armed (a
command that panicked its shard twice), checks the security headers, reaches every control of
every page with the keyboard alone, and writes a
screenshot of every page to the output directory (CONSOLE_OUT, default a fresh directory under
/tmp; UPDATE_SCREENSHOTS=1 also writes the ones docs/OPERATIONS.md shows into docs/console/).

With --measure-cpu SECONDS it instead measures orderd's CPU (from /proc/<pid>/stat) over an
idle window and over a window with three consoles open on the Overview, and prints both.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import (NoAlertPresentException,
                                        StaleElementReferenceException, TimeoutException)
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/orderd/target"))
ORDERD = os.path.join(TARGET, "release", "orderd")
# Every wait is explicit and bounded by this (seconds); nothing sleeps a fixed time.
WAIT_S = 20
PAGES = ["overview", "shards", "incidents", "inspection", "backups", "changes", "audit",
         "orders", "stock"]
# Pages docs/OPERATIONS.md shows (UPDATE_SCREENSHOTS=1 writes them into docs/console/).
DOC_PAGES = ["overview", "shards", "backups", "changes", "orders"]
CANARY_NAME = 'Eve <script>window.__xss = 1</script>'
CANARY_NOTE = 'gift <img src=x onerror="window.__xss = 2">'
CANARY_EVENT = '<svg onload="window.__xss = 3"></svg> left at door'


class Orderd:
    """The release orderd on port 0 in a temporary directory, as ops/contract-test.sh runs it."""

    def __init__(self, failpoints=False):
        """`failpoints`: leave the test build's failpoints armed (SKUs named FAILPOINT-PANIC…
        make a shard panic), for the quarantine's Lift."""
        self.failpoints = failpoints
        if not os.access(ORDERD, os.X_OK):
            sys.exit(f"{ORDERD} is missing: build it first (make console-test does)")
        self.work = tempfile.mkdtemp(prefix="orderd-console-")
        env = dict(os.environ,
                   ORDERD__HTTP__LISTEN="127.0.0.1:0", ORDERD__TCP__LISTEN="127.0.0.1:0",
                   ORDERD__STORAGE__DATA_DIR=f"{self.work}/data", ORDERD__ENGINE__SHARDS="2",
                   ORDERD__BACKUP__DIR=f"{self.work}/backups",
                   ORDERD__BACKUP__OFFSITE=f"{self.work}/offsite",
                   # The console's change is checked within its short watch window.
                   ORDERD__CHANGES__WATCH_CHECK_INTERVAL_MS="200",
                   RUST_LOG="info")
        if not failpoints:
            env["ORDERD_FAILPOINTS"] = "off"
        self.log_path = f"{self.work}/orderd.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([ORDERD], cwd=self.work, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.base = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit("orderd exited; its log:\n" + open(self.log_path).read())
            match = re.search(r'listening addr=([0-9.:]+) protocol="http"',
                              open(self.log_path, errors="replace").read())
            if match:
                self.base = "http://" + match.group(1)
                try:
                    urllib.request.urlopen(self.base + "/readyz", timeout=2)
                    break
                except (urllib.error.URLError, ConnectionError):
                    pass
            time.sleep(0.05)
        else:
            sys.exit("orderd did not become ready; its log:\n" + open(self.log_path).read())
        self.admin = open(f"{self.work}/data/admin.key").read().strip()

    def call(self, method, path, body=None, key=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", "Bearer " + (key or self.admin))
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def ok(self, method, path, body=None, key=None):
        status, answer = self.call(method, path, body, key)
        assert 200 <= status < 300, f"{method} {path}: {status} {answer}"
        return answer

    def cpu_ticks(self):
        """utime + stime of orderd, in clock ticks (/proc/<pid>/stat fields 14 and 15)."""
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        panicked = "panicked" in open(self.log_path, errors="replace").read()
        shutil.rmtree(self.work, ignore_errors=True)
        assert self.failpoints or not panicked, "orderd panicked during the console test"


def browser():
    options = webdriver.ChromeOptions()
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000", "--disable-extensions", "--no-first-run"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chromium = shutil.which("chromium")
    if chromium:
        options.binary_location = chromium
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver_path), options=options)


class Console:
    """One browser tab on the console."""

    def __init__(self, server, out_dir=None):
        self.server = server
        self.out_dir = out_dir
        self.driver = browser()
        # Overview and Shards re-render every 2 s: an element found may go stale; look again.
        self.wait = WebDriverWait(self.driver, WAIT_S,
                                  ignored_exceptions=[StaleElementReferenceException])

    def quit(self):
        self.driver.quit()

    def find(self, css):
        return self.wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))

    def clickable(self, css):
        return self.wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, css)))

    def text_in(self, css, text):
        self.wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))

    def open(self):
        self.driver.get(self.server.base + "/console")
        self.find("#key")

    def sign_in(self, key):
        box = self.clickable("#key")
        box.clear()
        box.send_keys(key, Keys.ENTER)
        self.find("#app:not([hidden])")
        self.text_in("#who", "role ")

    def sign_out(self):
        self.clickable("#signout").click()
        self.find("#signin-view:not([hidden])")
        assert self.driver.execute_script(
            "return sessionStorage.length") == 0, "the key outlived the sign-out"

    def goto(self, name):
        self.clickable(f'nav button[data-page="{name}"]').click()
        self.find(f'main[data-page="{name}"]')

    def screenshot(self, name):
        if self.out_dir:
            self.driver.save_screenshot(os.path.join(self.out_dir, f"{name}.png"))

    def status(self):
        return self.driver.find_element(By.ID, "status").text

    def wait_for(self, predicate, what):
        try:
            return self.wait.until(lambda _driver: predicate())
        except TimeoutException:
            raise AssertionError(f"timed out waiting for {what}; status line: {self.status()!r}")

    def shard_rows(self):
        """(id, state, restarts) of each row in the Shards page's table."""
        rows = []
        for row in self.driver.find_elements(By.CSS_SELECTOR, "#shards tbody tr"):
            cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            rows.append((cells[0], cells[1], cells[3]))
        return rows


def fixtures(server):
    """Keys of two admins of different owners, and an order whose customer name, note and
    shipment event note hold script canaries."""
    alice = server.ok("POST", "/v1/keys", {"name": "alice", "role": "admin", "owner": "alice"})
    bob = server.ok("POST", "/v1/keys", {"name": "bob", "role": "admin", "owner": "bob"})
    server.ok("POST", "/v1/stock/MUG-BLUE/adjustments", {"delta": 50, "reason": "console test"})
    customer = server.ok("POST", "/v1/customers",
                         {"name": CANARY_NAME, "email": "eve@example.com"})
    order = server.ok("POST", "/v1/orders", {
        "customer_id": customer["id"], "note": CANARY_NOTE,
        "lines": [{"sku": "MUG-BLUE", "qty": 2, "unit_price": 1250}]})
    shipment = server.ok("POST", f"/v1/orders/{order['id']}/shipments",
                         {"carrier": "dhl", "lines": [{"sku": "MUG-BLUE", "qty": 1}]})
    server.ok("POST", f"/v1/shipments/{shipment['id']}/events",
              {"status": "in_transit", "note": CANARY_EVENT})
    return {"alice": alice["secret"], "bob": bob["secret"], "customer": customer["id"],
            "order": order["id"]}


def check_headers(server):
    for path in ["/console", "/console/console.js", "/console/console.css"]:
        with urllib.request.urlopen(server.base + path, timeout=10) as response:
            csp = response.headers["Content-Security-Policy"] or ""
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp, (path, csp)
            assert "default-src 'none'" in csp, (path, csp)
            assert response.headers["X-Frame-Options"] == "DENY", path
            assert response.headers["Referrer-Policy"] == "no-referrer", path
            body = response.read().decode()
            assert "http://" not in body and "https://" not in body, f"{path} names an outside address"


def no_injection(console):
    driver = console.driver
    try:
        alert = driver.switch_to.alert
        raise AssertionError(f"an alert opened: {alert.text}")
    except NoAlertPresentException:
        pass
    assert driver.execute_script("return window.__xss === undefined"), "a canary script ran"
    injected = driver.execute_script(
        "return document.querySelectorAll('main script, main img, main svg').length")
    assert injected == 0, f"{injected} injected element(s) in the page"


# The focused control's label: its id, else its text (unique on every page: "Verify bak_…").
# Polling pages re-render every 2 s and keep focus on the element with the same id, so labels
# are compared, not elements, and keys go to whatever has focus (ActionChains).
FOCUSED_JS = "const e = document.activeElement; return e ? (e.id || e.textContent.trim()) : '';"


def press(console, *keys):
    ActionChains(console.driver).send_keys(*keys).perform()


def tab_from_top(console):
    console.driver.execute_script("document.activeElement && document.activeElement.blur()")
    press(console, Keys.TAB)


def keyboard_reaches_every_control(console, name):
    """From the top of the document, Tab through the page until every visible, enabled
    control of the page (and of the navigation) had focus."""
    driver = console.driver
    wanted = set(driver.execute_script("""
        const all = document.querySelectorAll(
          'nav button, #identity button, main button, main input, main select, main summary');
        return [...all].filter((e) => !e.disabled && e.offsetParent !== null)
          .map((e) => e.id || e.textContent.trim());"""))
    assert wanted, f"{name}: no controls"
    reached = set()
    tab_from_top(console)
    for _ in range(len(wanted) * 3 + 20):
        reached.add(driver.execute_script(FOCUSED_JS))
        if wanted <= reached:
            break
        press(console, Keys.TAB)
    missing = wanted - reached
    assert not missing, f"{name}: not reachable by Tab: {sorted(missing)}"


def press_enter_on(console, element_id):
    """Moves focus to the element with `element_id` with Tab alone and presses Enter."""
    console.clickable("#" + element_id)
    tab_from_top(console)
    for _ in range(200):
        if console.driver.execute_script(FOCUSED_JS) == element_id:
            press(console, Keys.ENTER)
            return
        press(console, Keys.TAB)
    raise AssertionError(f"#{element_id} is not reachable with Tab")


def run(out_dir):
    server = Orderd()
    console = None
    try:
        check_headers(server)
        fx = fixtures(server)
        console = Console(server, out_dir)
        console.open()
        console.screenshot("signin")

        # A wrong key is refused and stays out of storage.
        console.clickable("#key").send_keys("odk_wrong", Keys.ENTER)
        console.text_in("#signin-error", "unknown or revoked")
        assert console.driver.execute_script("return sessionStorage.length") == 0

        # Sign in with the keyboard: the key field has focus, Enter submits.
        console.sign_in(server.admin)
        assert "role admin" in console.driver.find_element(By.ID, "who").text
        assert server.admin not in console.driver.current_url
        assert not console.driver.get_cookies(), "the console set a cookie"
        stored = console.driver.execute_script("return Object.values(sessionStorage)")
        assert stored == [server.admin], "the key is kept in sessionStorage"

        # Overview: readiness, both shards running, and the request chart after two polls.
        console.text_in("#readiness", "ready")
        console.wait_for(lambda: len(console.driver.find_elements(
            By.XPATH, "//main//table//td[.='running']")) == 2, "two running shards")
        console.wait_for(lambda: console.driver.find_element(
            By.CSS_SELECTOR, ".figure-value").text.endswith("req/s"), "a request rate")
        # Requests outside /v1/ops show in the rate (the console's own polling does not).
        for _ in range(40):
            server.ok("GET", "/v1/stock/MUG-BLUE")
        console.wait_for(lambda: float(console.driver.find_element(
            By.CSS_SELECTOR, ".figure-value").text.split()[0]) > 0, "a request rate above 0")
        console.text_in("#inspection-summary", "at ")
        console.screenshot("overview")
        keyboard_reaches_every_control(console, "overview")

        # Shards: restart shard 1 with the keyboard, confirm, watch it run again.
        console.goto("shards")
        console.wait_for(lambda: len(console.shard_rows()) == 2, "both shards listed")
        assert [r[0] for r in console.shard_rows()] == ["0", "1"]
        keyboard_reaches_every_control(console, "shards")
        press_enter_on(console, "restart-1")
        console.find("dialog[open]")
        console.text_in("#confirm-text", "Restart shard 1?")
        console.screenshot("shards-confirm")
        # Focus starts on Cancel; Shift+Tab reaches Confirm.
        assert console.driver.execute_script(FOCUSED_JS) == "confirm-no"
        ActionChains(console.driver).key_down(Keys.SHIFT).send_keys(Keys.TAB) \
            .key_up(Keys.SHIFT).perform()
        assert console.driver.execute_script(FOCUSED_JS) == "confirm-yes"
        press(console, Keys.ENTER)
        console.wait_for(lambda: ("1", "running", "1") in console.shard_rows(),
                         "shard 1 running again after one restart")
        console.screenshot("shards")

        # Incidents: the restart is one.
        console.goto("incidents")
        console.text_in("main", "shard/1")
        console.screenshot("incidents")
        keyboard_reaches_every_control(console, "incidents")

        # Inspection: run now, every check with its detail.
        console.goto("inspection")
        console.clickable("#inspection-run").click()
        console.text_in("#inspection-overall", "overall")
        checks = console.driver.find_elements(By.CSS_SELECTOR, "main table tbody tr")
        assert len(checks) >= 8, f"{len(checks)} checks"
        console.screenshot("inspection")
        keyboard_reaches_every_control(console, "inspection")

        # Backups: create one, drill it.
        console.goto("backups")
        console.clickable("#backup-create").click()
        console.wait_for(lambda: len(console.driver.find_elements(
            By.CSS_SELECTOR, "#backups tbody tr")) == 1, "the new backup listed")
        console.clickable("#backups button.verify").click()
        console.text_in("#drill-result", "passed")
        console.text_in("#backups", "passed")
        console.screenshot("backups")
        keyboard_reaches_every_control(console, "backups")

        # Changes: alice requests, bob (another owner) approves and applies.
        console.sign_out()
        console.sign_in(fx["alice"])
        console.goto("changes")
        select = console.clickable("#change-setting")
        setting = "inspection.interval_s"
        current = next(item for item in server.ok("GET", "/v1/ops/config")["items"]
                       if item["setting"] == setting)
        Select(select).select_by_value(setting)
        console.text_in("#setting-about", "integer, ")
        assert console.find("#change-value").get_attribute("min") == str(current["min"])
        console.find("#change-value").send_keys(str(current["value"] + 1))
        console.find("#change-reason").send_keys("console test: a slower inspection")
        watch = console.find("#change-watch")
        watch.clear()
        watch.send_keys("2")
        console.clickable("#change-submit").click()
        console.text_in("#changes", "pending")
        # Her own approval is refused by the server (four eyes), and the console says so.
        console.clickable("#changes button.approve").click()
        console.find("#status.error")
        console.text_in("#changes", "pending")
        console.sign_out()
        console.sign_in(fx["bob"])
        console.goto("changes")
        console.clickable("#changes button.approve").click()
        console.text_in("#changes", "approved")
        console.clickable("#changes button.apply").click()
        console.text_in("#changes", "applied")
        console.find("#watch-chart")
        console.text_in("#watch-figures", "verdict")
        applied = next(item for item in server.ok("GET", "/v1/ops/config")["items"]
                       if item["setting"] == setting)
        assert applied["value"] == current["value"] + 1, applied
        console.screenshot("changes")
        keyboard_reaches_every_control(console, "changes")

        # Audit: a page of entries and the chain verified.
        console.goto("audit")
        console.clickable("#audit-verify").click()
        console.text_in("#audit-verified", "ok")
        console.text_in("#audit", "change.approve")
        # Paging: more entries than a page; Next shows older ones, Previous the same first page.
        for n in range(30):
            server.ok("POST", "/v1/stock/MUG-BLUE/adjustments",
                      {"delta": 1, "reason": f"console test: audit page {n}"})
        console.goto("audit")

        def audit_seqs():
            """(seq, chain) of each row shown; [] while the table is being replaced."""
            try:
                rows = console.driver.find_elements(By.CSS_SELECTOR, "#audit tbody tr")
                return [tuple(cell.text for cell in row.find_elements(By.TAG_NAME, "td")[:2])
                        for row in rows]
            except StaleElementReferenceException:
                return []

        console.wait_for(lambda: len(audit_seqs()) == 25, "a full first page of 25 entries")
        first = audit_seqs()
        assert not console.find("#audit-prev").is_enabled(), "no page before the first"
        console.clickable("#audit-next").click()
        console.wait_for(lambda: audit_seqs() and audit_seqs()[0] not in first,
                         "the next page's entries")
        second = audit_seqs()
        assert not set(first) & set(second), f"pages overlap: {first} / {second}"
        console.clickable("#audit-prev").click()
        console.wait_for(lambda: audit_seqs() == first, "the first page again")
        console.screenshot("audit")
        keyboard_reaches_every_control(console, "audit")

        # Orders: the canaries are text, nothing ran, nothing was injected.
        console.goto("orders")
        console.find("#orders-query").send_keys(fx["customer"], Keys.ENTER)
        console.text_in("#orders-results", fx["order"])
        text = console.find("#orders-results").text
        for canary in [CANARY_NAME, CANARY_NOTE, CANARY_EVENT]:
            assert canary in text, f"{canary!r} not shown as text"
        no_injection(console)
        console.screenshot("orders")
        keyboard_reaches_every_control(console, "orders")
        query = console.find("#orders-query")
        query.clear()
        query.send_keys(fx["order"], Keys.ENTER)
        console.text_in("#orders-results", "History")
        no_injection(console)

        # Stock by SKU.
        console.goto("stock")
        console.find("#stock-query").send_keys("MUG-BLUE", Keys.ENTER)
        console.text_in("#stock-results", "MUG-BLUE")
        console.screenshot("stock")
        keyboard_reaches_every_control(console, "stock")

        # An auditor's console shows what the role may do, and greys out what it may not.
        console.sign_out()
        auditor = server.ok("POST", "/v1/keys",
                            {"name": "audit desk", "role": "auditor", "owner": "carol"})
        console.sign_in(auditor["secret"])
        may = console.wait_for(lambda: console.driver.execute_script(
            "return [...document.querySelectorAll('#may li')].map((e) => e.textContent)"),
            "the auditor's list of routes")
        assert "GET /v1/audit/verify" in may and "POST /v1/ops/backups" not in may, may
        console.goto("changes")
        console.find("#changes tbody tr")
        assert not console.driver.find_elements(By.ID, "change-form"), "auditors request no change"
        rollback = console.find("#changes button.rollback")
        assert not rollback.is_enabled(), "an auditor's Roll back is not greyed out"
        console.goto("backups")
        console.find("#status.error")
        assert "may not" in console.status(), console.status()

        # Every page was screenshotted.
        if out_dir:
            missing = [p for p in PAGES if not os.path.exists(os.path.join(out_dir, p + ".png"))]
            assert not missing, f"no screenshot of {missing}"
            if os.environ.get("UPDATE_SCREENSHOTS"):
                for name in DOC_PAGES:
                    shutil.copy(os.path.join(out_dir, name + ".png"),
                                os.path.join(ROOT, "docs", "console", name + ".png"))
        # The browser's console logged no CSP violation and no script error (refused API
        # calls, such as the wrong key's 401, are logged as failed loads and are expected).
        errors = [entry for entry in console.driver.get_log("browser")
                  if "Content Security Policy" in entry["message"]
                  or "Uncaught" in entry["message"]]
        assert not errors, f"browser errors: {errors}"
        lift_a_quarantine(console)
    finally:
        if console:
            console.quit()
        server.stop()


def lift_a_quarantine(console):
    """A second server with its failpoints armed: an adjustment that panics its shard twice is
    quarantined; the Incidents page lists it, Lift (confirmed) takes it off, and the server
    agrees. Skipped, and said so, when the binary has no failpoints compiled in."""
    server = Orderd(failpoints=True)
    try:
        if "failpoints are compiled in" not in open(server.log_path, errors="replace").read():
            print("console test: no failpoints in this build; the quarantine's Lift not tried")
            return
        sku = "FAILPOINT-PANIC-CONSOLE"

        def restarts():
            return sum(s["restarts"] for s in server.ok("GET", "/v1/ops/shards"))

        def wait_running(count):
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                shards = server.ok("GET", "/v1/ops/shards")
                if (sum(s["restarts"] for s in shards) >= count
                        and all(s["state"] == "running" for s in shards)):
                    return
                time.sleep(0.05)
            raise AssertionError(f"shards not running again after {count} restarts")

        for n in range(2):
            status, answer = server.call("POST", f"/v1/stock/{sku}/adjustments",
                                         {"delta": 5, "reason": "console test: a poison command"})
            assert status == 503, f"the command panics its shard: {status} {answer}"
            wait_running(n + 1)
        status, answer = server.call("POST", f"/v1/stock/{sku}/adjustments",
                                     {"delta": 5, "reason": "console test: a poison command"})
        assert status == 422 and answer["code"] == "quarantined", f"{status} {answer}"
        fingerprint = server.ok("GET", "/v1/ops/quarantine")["items"][0]["fingerprint"]
        before = restarts()

        console.server = server
        console.open()
        console.sign_in(server.admin)
        console.goto("incidents")
        console.text_in("main", fingerprint)
        console.wait.until(EC.element_to_be_clickable(
            (By.XPATH, "//main//button[normalize-space(.)='Lift']"))).click()
        console.find("dialog[open]")
        console.text_in("#confirm-text", f"Lift the quarantine of {fingerprint}?")
        console.clickable("#confirm-yes").click()
        console.wait_for(lambda: not console.driver.find_elements(
            By.XPATH, "//main//button[normalize-space(.)='Lift']"), "the Lift button gone")
        assert server.ok("GET", "/v1/ops/quarantine")["items"] == [], "still quarantined"
        assert restarts() == before, "the lift restarted nothing"
    finally:
        server.stop()


def measure_cpu(seconds, consoles):
    """orderd's CPU over `seconds` idle, then over `seconds` with `consoles` tabs polling the
    Overview; percent of one core and of the machine."""
    server = Orderd()
    tabs = []
    try:
        hz = os.sysconf("SC_CLK_TCK")
        cores = os.cpu_count()

        def window():
            start_ticks, start = server.cpu_ticks(), time.monotonic()
            deadline = start + seconds
            while time.monotonic() < deadline:
                time.sleep(min(1.0, deadline - time.monotonic()))
            return (server.cpu_ticks() - start_ticks) / hz / (time.monotonic() - start)

        def shard_reads():
            """GET /v1/ops/shards answered so far (every console's every poll makes one)."""
            with urllib.request.urlopen(server.base + "/metrics", timeout=10) as response:
                text = response.read().decode()
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("orderd_request_duration_seconds_count")
                       and 'route="/v1/ops/shards"' in line)

        idle = window()
        for _ in range(consoles):
            tab = Console(server)
            tab.open()
            tab.sign_in(server.admin)
            tab.text_in("#readiness", "ready")
            tabs.append(tab)
        reads_before = shard_reads()
        busy = window()
        polls_per_s = (shard_reads() - reads_before) / seconds
        assert polls_per_s >= 0.8 * consoles * 1000 / 2000, f"the consoles polled {polls_per_s}/s"
        print(f"orderd CPU over {seconds} s: idle {idle * 100:.3f}% of one core; "
              f"with {consoles} consoles on the Overview {busy * 100:.3f}% of one core "
              f"({busy * 100 / cores:.3f}% of {cores} cores); the consoles cost "
              f"{(busy - idle) * 100:.3f}% of one core; {polls_per_s:.2f} overview polls/s")
    finally:
        for tab in tabs:
            tab.quit()
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure-cpu", type=float, metavar="SECONDS")
    parser.add_argument("--consoles", type=int, default=3)
    args = parser.parse_args()
    if args.measure_cpu:
        measure_cpu(args.measure_cpu, args.consoles)
        return
    out_dir = os.environ.get("CONSOLE_OUT") or tempfile.mkdtemp(prefix="orderd-console-shots-")
    os.makedirs(out_dir, exist_ok=True)
    started = time.monotonic()
    run(out_dir)
    print(f"console test passed in {time.monotonic() - started:.1f} s; screenshots in {out_dir}")


if __name__ == "__main__":
    main()
