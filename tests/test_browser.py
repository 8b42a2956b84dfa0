"""The page at / in a real browser (headless Chromium): the playground, the
live overview, the task list, the cancel button. Not collected when no
Chromium is installed (see conftest.py); DASHBOARD_SCREENSHOTS=dir saves
the screenshots the README and docs/web-page.md show."""

from __future__ import annotations

import os
import threading

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait
from werkzeug.serving import make_server

from tests.browser import Chromium, csp_violations
from tests.support import insert, write_tenant_usage

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def chromium():
    browser = Chromium()
    yield browser.driver
    browser.quit()


@pytest.fixture(autouse=True)
def page_keeps_its_content_security_policy(chromium):
    """Every test here runs under the page's Content-Security-Policy
    (api/security_headers.py): the browser must report no violation."""
    csp_violations(chromium)
    yield
    assert csp_violations(chromium) == []


@pytest.fixture
def site(api_url, db):
    """The API behind a real HTTP server (the real cancel endpoint included)."""
    from api import create_app
    app = create_app({"DATABASE_URL": api_url, "TESTING": True})

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()
    app.extensions["result_waiter"].close()
    app.extensions["pool"].close()


def wait(driver, condition, timeout=20, message=""):
    # The live parts are replaced as the page refreshes them: an element read
    # a moment ago may be gone (stale), which only means "look again".
    return WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)


def text_of(driver, css) -> str:
    return " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, css))


def screenshot(driver, name):
    target = os.environ.get("DASHBOARD_SCREENSHOTS")
    if target:
        driver.execute_script("window.scrollTo(0, 0)")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(max(height + 120, 800), 1500))
        driver.save_screenshot(os.path.join(target, f"{name}.png"))
        driver.set_window_size(1280, 1000)


def submit(driver, expression, variables=""):
    field = driver.find_element(By.ID, "expression")
    field.clear()
    field.send_keys(expression)
    driver.find_element(By.ID, "variables").clear()
    driver.find_element(By.ID, "variables").send_keys(variables, Keys.ENTER)  # Enter submits


def test_playground_results_errors_and_refusals(chromium, site, calculators, db):
    _, base = site
    chromium.get(base + "/")
    submit(chromium, "x*t**y", "x=10, y=1, t=11")
    # No Calculator yet: the page waits (a long poll) and shows the result when it comes.
    wait(chromium, lambda d: "calculating" in text_of(d, "#submissions li"), message="pending")
    calculators()
    wait(chromium, lambda d: "= 110" in text_of(d, "#submissions li"), message="110")
    submit(chromium, "1/0")
    wait(chromium, lambda d: "error: division by zero" in text_of(d, "#submissions li"), message="1/0")

    submit(chromium, "2 +* 3")
    alert = wait(chromium, lambda d: d.find_element(By.ID, "expression-error").is_displayed()
                 and d.find_element(By.ID, "expression-error"))
    assert "parse error at column 4" in alert.text
    assert alert.find_element(By.CSS_SELECTOR, "mark").text == "*"  # the spot is marked
    assert chromium.find_element(By.ID, "expression").get_attribute("aria-invalid") == "true"
    screenshot(chromium, "dashboard-refused")
    submit(chromium, "x+1", "x=ten")
    wait(chromium, lambda d: "'ten' is not a number" in d.find_element(By.ID, "expression-error").text,
         message=chromium.find_element(By.ID, "expression-error").get_attribute("outerHTML"))
    submit(chromium, "sqrt(x)", "x=16")
    wait(chromium, lambda d: "= 4.0" in text_of(d, "#submissions li"))
    assert not chromium.find_element(By.ID, "expression-error").is_displayed()
    # the overview and the task list follow without waiting for their next turn
    wait(chromium, lambda d: d.find_element(By.ID, "stat-done").text == "2"
         and len(d.find_elements(By.CSS_SELECTOR, "#recent-tasks tbody tr")) == 3, timeout=4)
    screenshot(chromium, "dashboard-playground")

    # The submissions stay listed across a reload of the page.
    chromium.refresh()
    wait(chromium, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#submissions li")) == 3)
    assert "= 110" in text_of(chromium, "#submissions li")
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 3


def test_overview_follows_100_inserted_tasks(chromium, site, calculators, db):
    _, base = site
    db.execute("DELETE FROM calculators")  # those killed by earlier tests
    chromium.get(base + "/")
    wait(chromium, lambda d: d.find_element(By.ID, "stat-pending").text == "0")
    assert "No Calculator" in chromium.find_element(By.ID, "overview").text
    db.execute("INSERT INTO tasks (expression, variables) "
               "SELECT 'x^2', jsonb_build_object('x', g) FROM generate_series(1, 99) g")
    db.execute("INSERT INTO tasks (expression) VALUES ('sqrt(-1)')")
    wait(chromium, lambda d: d.find_element(By.ID, "stat-pending").text == "100", message="100 pending")
    calculators()
    wait(chromium, lambda d: d.find_element(By.ID, "stat-pending").text == "0"
         and d.find_element(By.ID, "stat-done").text == "99"
         and d.find_element(By.ID, "stat-error").text == "1", timeout=30, message="all done")
    calculators_table = chromium.find_element(By.ID, "overview").text
    assert "Live Calculators (1)" in calculators_table and "task_num=100" in calculators_table
    # the sparkline has drawn the rate from the totals it saw move
    wait(chromium, lambda d: d.find_element(By.CSS_SELECTOR, "#sparkline polyline").get_attribute("points"))
    wait(chromium, lambda d: "math domain error" in text_of(d, "#recent-failures"), message="failures")
    screenshot(chromium, "dashboard-overview")


def test_tasks_filter_detail_and_cancel(chromium, site, db):
    app, base = site
    db.execute("INSERT INTO tasks (expression, status, error, finished_at) "
               "VALUES ('1/0', 'error', 'division by zero', now())")
    pending = insert(db, "2+2")
    chromium.get(base + "/")
    wait(chromium, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recent-tasks tbody tr")) == 2)

    Select(chromium.find_element(By.ID, "status")).select_by_value("error")
    wait(chromium, lambda d: [r.get_attribute("data-status") for r in
                              d.find_elements(By.CSS_SELECTOR, "#recent-tasks tbody tr")] == ["error"])
    assert chromium.current_url.endswith("/?status=error")
    Select(chromium.find_element(By.ID, "status")).select_by_value("pending")
    wait(chromium, lambda d: [r.get_attribute("data-id") for r in
                              d.find_elements(By.CSS_SELECTOR, "#recent-tasks tbody tr")] == [str(pending)])

    lookup = chromium.find_element(By.ID, "task-id")
    lookup.clear()
    lookup.send_keys("1", Keys.ENTER)
    wait(chromium, lambda d: "Task 1" in d.find_element(By.ID, "task-detail").text
         and "division by zero" in d.find_element(By.ID, "task-detail").text)
    lookup.clear()
    lookup.send_keys("999", Keys.ENTER)
    wait(chromium, lambda d: "No task with id 999" in d.find_element(By.ID, "task-detail").text)

    chromium.find_element(By.CSS_SELECTOR, f'#recent-tasks button.cancel[data-id="{pending}"]').click()
    wait(chromium, lambda d: f"Task {pending} cancelled." in d.find_element(By.ID, "refresh-state").text)
    assert db.execute("SELECT status FROM tasks WHERE id = %s", (pending,)).fetchone() == ("cancelled",)


def test_with_keys_the_browser_signs_in_with_an_admin_key(chromium, api_url, db, calculators):
    """AUTH=required: the page answers 401 with a Basic challenge (the
    browser's own sign-in prompt); with the admin key as the password
    (given here in the URL once, as a person types it into the prompt) the
    page works, and its requests to the API carry the key too."""
    from api import create_app
    from api.keys import create_key
    from core.settings import ApiSettings
    from tests.test_auth import serve
    key = create_key(db, "root", admin=True)
    app = create_app({"DATABASE_URL": api_url, "TESTING": True,
                      "SETTINGS": ApiSettings.from_env({"AUTH": "required"})})
    calculators()
    try:
        with serve(app) as base:
            chromium.get(base + "/")
            assert not chromium.find_elements(By.ID, "expression"), "no page without the key"
            # Signed in once (the prompt's answer is cached by the browser for
            # this site), the page is opened at its plain address.
            chromium.get(base.replace("http://", f"http://admin:{key}@") + "/")
            chromium.get(base + "/")
            submit(chromium, "x*t**y", "x=10, y=1, t=11")
            wait(chromium, lambda d: "= 110" in text_of(d, "#submissions li"), message="110 with the key")
            wait(chromium, lambda d: d.find_element(By.ID, "stat-done").text == "1", timeout=10)
            assert db.execute("SELECT owner FROM tasks").fetchone() == (1,), "the admin key's task"
    finally:
        app.extensions["result_waiter"].close()
        app.extensions["pool"].close()


def test_the_fairness_panel_follows_the_calculators_figures(chromium, site, db, calculator_rows):
    """The panel is part of the live overview: it shows the tenants as the
    Calculators' figures and the queue change, without a reload."""
    from api.keys import create_key
    _, base = site
    create_key(db, "alice", weight=3)
    create_key(db, "bob")
    chromium.get(base + "/")
    wait(chromium, lambda d: "No tenant has work waiting" in d.find_element(By.ID, "overview").text)

    def rows(d):
        return {r.get_attribute("data-tenant"): [c.text for c in r.find_elements(By.TAG_NAME, "td")][1:]
                for r in d.find_elements(By.CSS_SELECTOR, "#fairness tbody tr")}

    write_tenant_usage(calculator_rows, {"1": [30, 6, 2], "2": [10, 2, 1]})
    db.execute("INSERT INTO tasks (expression) VALUES ('1'), ('2')")
    wait(chromium, lambda d: rows(d) == {"alice": ["3", "75 %", "60 %", "2", "0"],
                                         "bob": ["1", "25 %", "20 %", "1", "0"],
                                         "(no owner)": ["1", "0 %", "20 %", "0", "2"]},
         message="the panel's first figures")
    meter = chromium.find_element(By.CSS_SELECTOR, '#fairness tr[data-tenant="alice"] meter')
    assert float(meter.get_attribute("value")) == 0.75
    assert chromium.find_element(By.ID, "fairness").get_attribute("aria-labelledby") == "fairness-heading"
    calculator_rows.execute("""UPDATE calculators SET tenant_usage = '{"2": [20, 6, 1], "none": [2, 2, 0]}'""")
    wait(chromium, lambda d: {k: v[1] for k, v in rows(d).items()} == {"bob": "75 %", "(no owner)": "25 %"},
         message="alice idle: no longer listed")


def test_the_page_is_under_its_content_security_policy(chromium, site):
    """The check above can fail: a script the page did not ship is refused
    and reported (the framing headers: tests/test_web_security.py)."""
    _, base = site
    chromium.get(base + "/")
    chromium.execute_script("const s = document.createElement('script'); s.textContent = 'window.injected = 1';"
                            "document.body.appendChild(s);")
    assert chromium.execute_script("return window.injected") is None
    assert any("inline script" in message for message in csp_violations(chromium))


def test_the_page_shows_the_sign_of_zero(chromium, site, calculators, db):
    """-0.0 on the page as in Python: the playground's answer, the task list
    and the detail (docs/grammar.md, the sign of zero)."""
    _, base = site
    calculators()
    chromium.get(base + "/")
    submit(chromium, "-0.0*x", "x=2.5")
    wait(chromium, lambda d: "= -0.0" in text_of(d, "#submissions li"), message="-0.0*x")
    submit(chromium, "atan2(0, x)", "x=-0.0")
    wait(chromium, lambda d: "= 3.141592653589793" in text_of(d, "#submissions li"), message="atan2")
    wait(chromium, lambda d: "-0.0" in text_of(d, "#recent-tasks tbody tr .result")
         and "x=-0.0" in text_of(d, "#recent-tasks tbody tr"), timeout=10)
    lookup = chromium.find_element(By.ID, "task-id")
    lookup.clear()
    lookup.send_keys("1", Keys.ENTER)
    wait(chromium, lambda d: "Task 1" in d.find_element(By.ID, "task-detail").text
         and "-0.0" in text_of(d, "#task-detail .result"))
