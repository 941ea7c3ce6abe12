"""Drives flujo's live KPI page in headless Chromium (Selenium + Debian's chromedriver).

    kpi_page.py URL --chromium PATH --chromedriver PATH

Opens URL, waits until the page's stream is live, prints one JSON line
{"ready": true}, then answers commands read from stdin, one JSON object a line,
with one JSON line each:

    {"expect": {"TESTID": "TEXT", ...}, "timeout": 30}
        waits until every element with that data-testid shows TEXT (thousands
        separators ignored); answers {"ok": bool, "seen": {TESTID: TEXT}}
    {"read": ["TESTID", ...]}
        answers {"ok": true, "seen": {...}}
    {"screenshot": "PATH"}
        saves a PNG of the whole page; answers {"ok": true, "path": PATH}
    {"requests": true}
        answers {"ok": true, "urls": [every resource the page loaded],
        "console": [browser console messages of level WARNING and above]}

It ends at end of input (or {"quit": true}), closing the browser. The driver is
the one given: Selenium never downloads anything.

    kpi_page.py URL --chromium PATH --chromedriver PATH --screenshot OUT --wait S

only waits S seconds after the stream is live, saves OUT and exits.
"""

import os

os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium fetch a driver

import argparse
import base64
import json
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

WIDTH = 1400


def say(obj):
    print(json.dumps(obj), flush=True)


def browser(chromium, chromedriver):
    options = Options()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--hide-scrollbars",
        f"--window-size={WIDTH},1000",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=chromedriver)
    return webdriver.Chrome(service=service, options=options)


def texts(driver, ids):
    return driver.execute_script(
        """
        const out = {};
        for (const id of arguments[0]) {
          const el = document.querySelector(`[data-testid="${id}"]`);
          out[id] = el === null ? null : el.textContent;
        }
        return out;
        """,
        list(ids),
    )


def same(shown, wanted):
    return shown is not None and shown.replace(",", "") == wanted.replace(",", "")


def wait_until(deadline, check, pause=0.1):
    while True:
        result = check()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(pause)


def wait_live(driver, timeout):
    deadline = time.monotonic() + timeout
    state = lambda: texts(driver, ["connection-state", "updated-at"])
    return wait_until(
        deadline,
        lambda: (lambda s: s["connection-state"] == "live" and s["updated-at"] != "never")(state()),
    ), state()


def screenshot(driver, path):
    """Saves a PNG of the whole page, beyond the window's height."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": WIDTH, "height": int(height), "scale": 1},
        },
    )
    with open(path, "wb") as out:
        out.write(base64.b64decode(shot["data"]))


def serve(driver):
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        command = json.loads(line)
        if command.get("quit"):
            return
        if "expect" in command:
            wanted = command["expect"]
            deadline = time.monotonic() + float(command.get("timeout", 30))
            seen = {}

            def matches():
                seen.clear()
                seen.update(texts(driver, wanted))
                return all(same(seen[k], v) for k, v in wanted.items())

            ok = wait_until(deadline, matches)
            say({"ok": bool(ok), "seen": dict(seen)})
        elif "read" in command:
            say({"ok": True, "seen": texts(driver, command["read"])})
        elif "screenshot" in command:
            screenshot(driver, command["screenshot"])
            say({"ok": True, "path": command["screenshot"]})
        elif "requests" in command:
            urls = driver.execute_script(
                "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)]"
            )
            console = [
                entry["message"]
                for entry in driver.get_log("browser")
                if entry.get("level") in ("WARNING", "SEVERE")
            ]
            say({"ok": True, "urls": urls, "console": console})
        else:
            say({"ok": False, "error": f"unknown command: {line}"})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--chromium", required=True)
    parser.add_argument("--chromedriver", required=True)
    parser.add_argument("--live-timeout", type=float, default=60)
    parser.add_argument("--screenshot", help="save a PNG of the page here and exit")
    parser.add_argument("--wait", type=float, default=5, help="seconds before --screenshot")
    args = parser.parse_args()

    driver = browser(args.chromium, args.chromedriver)
    try:
        driver.set_page_load_timeout(30)
        driver.get(args.url)
        live, state = wait_live(driver, args.live_timeout)
        if not live:
            say({"ready": False, "state": state})
            return 1
        if args.screenshot:
            time.sleep(args.wait)
            screenshot(driver, args.screenshot)
            say({"ok": True, "path": args.screenshot})
            return 0
        say({"ready": True})
        serve(driver)
        return 0
    except WebDriverException as e:
        say({"ready": False, "error": str(e).splitlines()[0] if str(e) else repr(e)})
        return 1
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
