"""The operator dashboard (/admin) and the key holder's page (/usage) in a real browser: headless
Chromium driven by Selenium. Seeded traffic must show with the ledger's exact figures; no token,
no dashboard; an admin token is not a customer key nor the other way round; a key holder sees
only their own customer; the CSV download is their ledger. Screenshots of every page go to
LMSVR_E2E_OUTPUT (default .build/e2e-output/dashboard)."""
import csv
import io
import os
import pathlib
import shutil
import tempfile
import time

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ROOT, Gateway

TOKEN = "admin-" + "7f3c9a1e5b2d4f60" * 2
OUTPUT = pathlib.Path(os.environ.get("LMSVR_E2E_OUTPUT", ROOT / ".build" / "e2e-output")) / "dashboard"


@pytest.fixture(scope="module")
def seeded():
    with tempfile.TemporaryDirectory(prefix="lmsvr-dash-") as workdir:
        g = Gateway(workdir, extra_env={"ADMIN_TOKEN": TOKEN})
        g.cli("set-pricing", "llama3", "0.001", "0", "--input-per-1m", "0.5", "--output-per-1m", "1.5")
        g.cli("set-pricing", "mistral", "0.002", "0")
        def customer(name, email, budget):
            made = g.cli("create-customer", name, email, "--budget", budget)
            return made["id"], g.cli("generate-key", str(made["id"]), "--name", "production")["key"]
        acme, acme_key = customer("Acme Robotics", "ops@acme.example", "10")
        other, other_key = customer("Bluebird Labs", "dev@bluebird.example", "0.01")
        for model, count, key in (("llama3", 5, acme_key), ("mistral", 3, acme_key), ("llama3", 2, other_key)):
            for _ in range(count):
                r = httpx.post(g.base + "/api/chat", headers={"Authorization": f"Bearer {key}"},
                               json={"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False})
                assert r.status_code == 200, r.text
        yield dict(g=g, acme=acme, acme_key=acme_key, other=other, other_key=other_key)
        assert g.stop() == 0


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "chromium and chromium-driver are installed by scripts/test.sh"
    downloads = tempfile.mkdtemp(prefix="lmsvr-downloads-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000", "--disable-gpu"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": downloads, "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    driver.downloads = downloads
    OUTPUT.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()
    shutil.rmtree(downloads, ignore_errors=True)


def shot(driver, name):
    driver.save_screenshot(str(OUTPUT / f"{name}.png"))


def nanos(driver, css):
    return int(driver.find_element(By.CSS_SELECTOR, css).get_attribute("data-nanos"))


def no_csp_violations(driver):
    problems = [entry["message"] for entry in driver.get_log("browser")
                if "Content Security Policy" in entry["message"] or entry["level"] == "SEVERE"]
    assert not problems, problems


def ledger_cost(g, customer):
    return sum(round(float(r["cost_usd"]) * 1e9) for r in g.ledger(customer))


def test_without_a_token_the_dashboard_is_off_and_says_how_to_turn_it_on(gateway):
    r = httpx.get(gateway.base + "/admin")
    assert r.status_code == 404 and "ADMIN_TOKEN" in r.text
    assert httpx.get(gateway.base + "/admin/customers", headers={"Authorization": "Bearer anything-at-all-long"}).status_code == 404


def test_the_admin_token_is_not_a_customer_key_and_a_key_does_not_open_admin(seeded):
    g = seeded["g"]
    r = httpx.post(g.base + "/api/chat", headers={"Authorization": f"Bearer {TOKEN}"},
                   json={"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False})
    assert r.status_code == 401
    assert httpx.get(g.base + "/v1/usage", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
    r = httpx.get(g.base + "/admin", headers={"Authorization": f"Bearer {seeded['acme_key']}"})
    assert r.status_code == 303 and r.headers["location"] == "/admin/login"
    r = httpx.get(g.base + "/admin", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "<script" not in r.text  # the operator's pages work without any script
    r = httpx.post(g.base + "/admin/login", data={"token": "wrong" * 8})
    assert r.status_code == 401 and "set-cookie" not in r.headers
    # The cookie is Secure unless the browser is on this machine; another site cannot log in or out.
    r = httpx.post(g.base + "/admin/login", data={"token": TOKEN}, headers={"Host": "gateway.example.com"})
    assert r.status_code == 303 and "; Secure" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    assert "; Secure" not in httpx.post(g.base + "/admin/login", data={"token": TOKEN}).headers["set-cookie"]
    for path in ("/admin/login", "/admin/logout"):
        assert httpx.post(g.base + path, data={"token": TOKEN}, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    # A forged or expired session cookie is refused.
    for cookie in ("1.00", f"{int(time.time() * 1e6)}.{'0' * 64}", f"{int((time.time() - 13 * 3600) * 1e6)}.{'a' * 64}"):
        assert httpx.get(g.base + "/admin", cookies={"lmsvr_admin": cookie}).status_code == 303


def test_operator_logs_in_and_sees_the_ledgers_figures(seeded, browser):
    g, driver = seeded["g"], browser
    wait = WebDriverWait(driver, 10)
    driver.get(g.base + "/admin")
    wait.until(EC.url_contains("/admin/login"))
    shot(driver, "login")
    driver.find_element(By.ID, "token").send_keys("not-the-token-at-all")
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    assert "not the admin token" in wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".error"))).text
    driver.get_log("browser")  # drains the console: that 401 was the point
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait.until(EC.presence_of_element_located((By.ID, "total-spend")))
    cookie = driver.get_cookie("lmsvr_admin")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"

    acme_cost, other_cost = ledger_cost(g, seeded["acme"]), ledger_cost(g, seeded["other"])
    assert nanos(driver, "#total-spend .money") == acme_cost + other_cost
    assert driver.find_element(By.ID, "total-requests").text == "10"
    bars = driver.find_elements(By.CSS_SELECTOR, "svg.chart rect[data-nanos]")
    assert sum(int(b.get_attribute("data-nanos")) for b in bars) == acme_cost + other_cost
    assert {b.get_attribute("data-series") for b in bars} == {"llama3", "mistral"}
    models = {row.get_attribute("data-model"): row for row in driver.find_elements(By.CSS_SELECTOR, "#models tbody tr")}
    assert models["mistral"].find_elements(By.TAG_NAME, "td")[1].text == "3"
    assert int(models["mistral"].find_element(By.CSS_SELECTOR, ".money").get_attribute("data-nanos")) == 3 * 2_000_000
    # The customer nearest their budget comes first; the exact amount is on hover.
    first = driver.find_element(By.CSS_SELECTOR, "table.customers tbody tr")
    assert first.get_attribute("data-customer") == str(seeded["other"])
    assert first.find_element(By.CSS_SELECTOR, ".money").get_attribute("title").startswith("$")
    no_csp_violations(driver)
    shot(driver, "overview")

    driver.get(g.base + "/admin/customers?sort=spent")
    rows = driver.find_elements(By.CSS_SELECTOR, "table.customers tbody tr")
    assert [r.get_attribute("data-customer") for r in rows][:2] == [str(seeded["acme"]), str(seeded["other"])]
    budget = g.cli("check-budget", str(seeded["acme"]))
    spent_cell = rows[0].find_elements(By.CSS_SELECTOR, "td .money")[1]
    assert int(spent_cell.get_attribute("data-nanos")) == budget["spent_nanos"] == acme_cost
    shot(driver, "customers")

    rows[0].find_element(By.TAG_NAME, "a").click()
    wait.until(EC.presence_of_element_located((By.ID, "keys")))
    assert nanos(driver, "#spent .money") == acme_cost
    bars = driver.find_elements(By.CSS_SELECTOR, "svg.chart rect[data-nanos]")
    assert sum(int(b.get_attribute("data-nanos")) for b in bars) == acme_cost
    assert seeded["acme_key"][:8] in driver.find_element(By.ID, "keys").text
    assert len(driver.find_elements(By.CSS_SELECTOR, "#ledger tbody tr")) == 8
    assert seeded["acme_key"] not in driver.page_source  # a key is never shown whole
    shot(driver, "customer")

    driver.get(g.base + "/admin/models")
    prices = {r.get_attribute("data-model"): r.text for r in driver.find_elements(By.CSS_SELECTOR, "#prices tbody tr")}
    assert set(prices) == {"llama3", "mistral"}
    assert len(driver.find_elements(By.CSS_SELECTOR, "#price-history tbody tr")) == 2
    no_csp_violations(driver)
    shot(driver, "models")

    driver.find_element(By.CSS_SELECTOR, "nav form button").click()
    wait.until(EC.url_contains("/admin/login"))
    driver.get(g.base + "/admin")
    wait.until(EC.url_contains("/admin/login"))


def test_a_key_holder_sees_only_their_own_month_and_downloads_their_rows(seeded, browser):
    g, driver = seeded["g"], browser
    wait = WebDriverWait(driver, 10)
    driver.get(g.base + "/usage")
    shot(driver, "usage-login")
    driver.find_element(By.ID, "key").send_keys("sk-not-a-key")
    driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait.until(lambda d: d.find_element(By.ID, "error").text)
    driver.get_log("browser")  # the refused key's 401 was expected
    driver.find_element(By.ID, "key").send_keys(seeded["other_key"])
    driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait.until(EC.visibility_of_element_located((By.ID, "usage")))
    assert not driver.find_element(By.ID, "key-form").is_displayed()
    other_cost = ledger_cost(g, seeded["other"])
    assert driver.find_element(By.ID, "customer").text == str(seeded["other"])
    assert nanos(driver, "#spent") == other_cost
    bars = driver.find_elements(By.CSS_SELECTOR, "#chart rect[data-nanos]")
    assert sum(int(b.get_attribute("data-nanos")) for b in bars) == other_cost
    assert [r.get_attribute("data-model") for r in driver.find_elements(By.CSS_SELECTOR, "#models tbody tr")] == ["llama3"]
    # The key lives in this tab's session storage: not in the URL, not in a cookie.
    assert driver.execute_script("return sessionStorage.getItem('lmsvr_key')") == seeded["other_key"]
    assert seeded["other_key"] not in driver.current_url and not driver.get_cookies()
    no_csp_violations(driver)
    shot(driver, "usage")

    driver.find_element(By.ID, "download").click()
    deadline = time.time() + 10
    while not [f for f in os.listdir(browser.downloads) if f.endswith(".csv")]:
        assert time.time() < deadline, "no CSV was downloaded"
        time.sleep(0.1)
    path = os.path.join(browser.downloads, next(f for f in os.listdir(browser.downloads) if f.endswith(".csv")))
    time.sleep(0.3)  # the browser renames the file when it is complete
    rows = list(csv.DictReader(io.StringIO(open(path).read())))
    ledger = g.ledger(seeded["other"])
    assert sorted(r["request_id"] for r in rows) == sorted(r["request_id"] for r in ledger)
    assert {r["customer_id"] for r in rows} == {str(seeded["other"])}
    assert sum(round(float(r["cost_usd"]) * 1e9) for r in rows) == other_cost

    driver.find_element(By.ID, "forget").click()
    assert driver.execute_script("return sessionStorage.getItem('lmsvr_key')") is None


def test_wrong_tokens_are_throttled_but_open_sessions_keep_working(seeded):
    """Last in this module: it leaves the gateway refusing tokens for a minute."""
    g = seeded["g"]
    session = httpx.post(g.base + "/admin/login", data={"token": TOKEN}).cookies["lmsvr_admin"]
    answers = [httpx.get(g.base + "/admin", headers={"Authorization": f"Bearer wrong-{i:020d}"}).status_code for i in range(25)]
    # Twenty wrong tokens a minute (the earlier tests' wrong ones count too), then every one refused.
    first = answers.index(429)
    assert 15 <= first <= 20 and set(answers[:first]) == {303} and set(answers[first:]) == {429}
    assert httpx.get(g.base + "/admin", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 429
    assert httpx.post(g.base + "/admin/login", data={"token": TOKEN}).status_code == 429
    assert httpx.get(g.base + "/admin", cookies={"lmsvr_admin": session}).status_code == 200
    assert "a wrong admin token was presented" in open(g.log_path).read()

