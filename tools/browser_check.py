"""What a person sees: a guarded run in a real TensorBoard and the HTML report, in headless Chromium.

Writes two runs of the paper's linear setting (``unguarded``: normguard only watches;
``guarded``: raise weight decay, then stop and restore), draws ``normguard report`` as HTML,
serves the runs with a real TensorBoard on 127.0.0.1, and loads in headless Chromium (through
chromedriver and selenium) the Custom Scalars, Time Series, Scalars and Text tabs and the
report, checking what a person would check:

* Custom Scalars: category ``normguard`` with the losses and noise floor, weight norm and
  gap charts first (in the first screen), then the growth exponent, the gap trend and the
  weight decay, each chart drawn with data from both runs;
* Time Series and Scalars: the groups in the order normguard, normguard-growth,
  normguard-layers, normguard-timeline, the first group starting with the gap, the losses
  and the norm, in the first screen;
* Text: every event line of both runs, exactly as the guard wrote it, and no JSON;
* the report at 1000 and 1600 px: the summary table with a row per run, one figure per
  run shown at its design size (half its pixels, never scaled to the window), and its
  "full-size image" link showing it at full size;
* the documentation site (``mkdocs build --strict``, served on 127.0.0.1): its home page and
  a guide reached through the navigation render with their title, the navigation, their
  pictures and code, and are not the 404 page; an API reference page shows the generated
  reference (skipped, and said so, when the ``docs`` extra is not installed);
* no console errors (level SEVERE) on any of these pages.

Screenshots go to ``--out`` (a new temporary directory by default). Exit status 0 when every
check passes, 1 otherwise (each failure printed), 2 when Chromium, chromedriver or selenium
is missing. Run::

    python tools/browser_check.py                 # prints the checks and the screenshots' folder
    python tools/browser_check.py --out shots --json

Needs ``chromium`` and ``chromium-driver`` (Debian: ``apt-get install chromium chromium-driver``)
and ``selenium`` (in the ``dev`` extra); the site's checks need the ``docs`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import normguard as ng
from normguard import report, tags
from normguard.science.datasets import power_law_regression

CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)
ROOT = Path(__file__).resolve().parents[1]
FIRST_SCREEN = (1400, 1000)  # a laptop's browser window
#: (nav link text, the page's expected first heading) of the guide opened through the site's navigation
SITE_GUIDE = ("Lightning", "Lightning: NormGuardCallback")
WAIT_S = 60.0

#: elements matching a CSS selector anywhere in the page, shadow roots included (Polymer tabs)
_DEEP_ALL = """
const selector = arguments[0], found = [];
const walk = (root) => {
  found.push(...root.querySelectorAll(selector));
  for (const el of root.querySelectorAll('*')) if (el.shadowRoot) walk(el.shadowRoot);
};
walk(document);
return found;
"""
#: the text of the page, shadow roots included
_DEEP_TEXT = """
const parts = [document.body.innerText];
const walk = (root) => {
  for (const el of root.querySelectorAll('*')) {
    if (el.shadowRoot) { parts.push(el.shadowRoot.textContent); walk(el.shadowRoot); }
  }
};
walk(document);
return parts.join('\\n');
"""


@dataclass
class Check:
    page: str
    what: str
    ok: bool
    detail: str = ""


@dataclass
class Result:
    out_dir: str
    checks: list[Check] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went (informative only)
    screenshots: list[str] = field(default_factory=list)
    console: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was not checked, and why

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def check(self, page: str, what: str, ok: bool, detail: Any = "") -> bool:
        self.checks.append(Check(page, what, bool(ok), "" if ok else str(detail)[:600]))
        return bool(ok)


# ---------------------------------------------------------------------------- the runs


def train(log_dir: Path, name: str, action: Any, steps: int) -> list[str]:
    """The paper's linear setting (n = 200, d = 300, α = 1.5, σ² = 1), full-batch Adam; the event lines."""
    data = power_law_regression(200, 1.5, seed=0, n_test=10)
    torch.manual_seed(0)
    model = torch.nn.Linear(data["x_train"].shape[1], 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.0)

    def mse(split: str) -> torch.Tensor:
        return (model(data[f"x_{split}"]).squeeze(-1) - data[f"y_{split}"]).pow(2).mean()

    guard = ng.NormGuard(model, opt, log_dir=str(log_dir / name), every_n_steps=10, noise_floor=1.0, action=action)
    with guard:
        for step in range(1, steps + 1):
            loss = mse("train")
            opt.zero_grad()
            loss.backward()
            opt.step()
            guard.step(loss)
            if step % 20 == 0:
                with torch.no_grad():
                    guard.validation_end(mse("val"))
            if guard.should_stop:
                break
    return [e.line() for e in guard.events]


def write_runs(log_dir: Path) -> dict[str, list[str]]:
    """Two runs, trained in this order (the report's columns): the event lines of each."""
    import logging
    import warnings

    logging.getLogger("normguard").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "unguarded": train(log_dir, "unguarded", "warn", steps=200),
            "guarded": train(log_dir, "guarded", ["weight_decay", "stop"], steps=300),
        }


# ---------------------------------------------------------------------------- TensorBoard and Chromium


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, probe: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:  # the server or the page is still starting
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"timed out waiting for {what} ({last})")


@contextlib.contextmanager
def tensorboard(log_dir: Path, runs: list[str], log: Path) -> Iterator[str]:
    """A TensorBoard serving ``log_dir`` on loopback, its process group killed at the end."""
    port = free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(log_dir), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--reload_interval", "1"]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"

    def served() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"TensorBoard exited: {log.read_text(errors='replace')[-1000:]}")
        with urllib.request.urlopen(f"{base}/data/plugin/scalars/tags", timeout=10) as response:
            listing = json.loads(response.read())
        return all(tags.TOTAL_NORM in listing.get(run, {}) for run in runs)

    try:
        wait_until("TensorBoard to serve both runs", served)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def find_browser() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", driver)) if path is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install selenium)")
    if missing:
        return "missing: " + ", ".join(missing)
    assert chromium is not None and driver is not None
    return chromium, driver


@contextlib.contextmanager
def chrome(chromium: str, chromedriver: str, profile: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}", f"--window-size={FIRST_SCREEN[0]},{FIRST_SCREEN[1]}"):
        options.add_argument(flag)
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)  # no Selenium Manager: paths given
    try:
        driver.set_page_load_timeout(WAIT_S)
        yield driver
    finally:
        driver.quit()


def viewport(driver: Any, width: int, height: int) -> None:
    """Make the page's viewport (not the window) ``width`` × ``height`` CSS pixels."""
    driver.set_window_size(width, height)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])


def console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


# ---------------------------------------------------------------------------- the pages


def check_custom_scalars(driver: Any, base: str, result: Result, shots: Path) -> None:
    page = "custom scalars"
    viewport(driver, *FIRST_SCREEN)
    driver.get(f"{base}/#custom_scalars")
    expected = list(tags.custom_scalars_layout()[tags.PREFIX])

    def charts() -> list[dict[str, Any]]:
        return driver.execute_script(
            _DEEP_ALL.replace("return found;", "")
            + """
            return found.map(card => {
              const root = card.shadowRoot;
              const paths = [];
              const walk = (r) => { paths.push(...r.querySelectorAll('path'));
                for (const el of r.querySelectorAll('*')) if (el.shadowRoot) walk(el.shadowRoot); };
              walk(root);
              const drawn = paths.filter(p => (p.getAttribute('d') || '').split(/[LC]/).length > 5).length;
              const matches = (root.querySelector('.matches-text') || {}).textContent || '';
              const box = card.getBoundingClientRect();
              return {title: card.title, drawn: drawn, matches: matches.trim(), top: box.top, left: box.left};
            });
            """,
            "tf-custom-scalar-multi-line-chart-card",
        )

    try:
        found = wait_until(
            "the Custom Scalars charts to be drawn",
            lambda: (lambda c: c if sum(x["drawn"] > 0 for x in c) >= len(expected) else None)(charts()),
        )
    except TimeoutError as exc:
        found = charts()
        result.check(page, "charts drawn", False, f"{exc}: {found}")
    time.sleep(0.5)  # let the last chart finish its transition
    found = charts()
    result.screenshots.append(save(driver, shots / "custom_scalars.png"))
    titles = [c["title"] for c in found]
    result.check(page, "category normguard: its charts first, in order", titles[: len(expected)] == expected, titles)
    for chart in found[: len(expected)]:
        result.check(page, f"chart {chart['title']!r} drawn with data", chart["drawn"] > 0, chart)
    per_run = {c["title"]: c["matches"] for c in found}
    for title in expected[:3]:
        result.check(page, f"chart {title!r} has both runs", per_run.get(title, "").startswith("Matches ("), per_run)
    height = driver.execute_script("return window.innerHeight")
    first = [c for c in found if c["title"] in expected[:3]]
    result.check(
        page,
        "losses with the floor, the norm and the gap in the first screen",
        len(first) == 3 and all(c["top"] < height - 150 for c in first),
        first,
    )


def time_series_groups(driver: Any) -> list[dict[str, Any]]:
    return driver.execute_script(
        """
        return Array.from(document.querySelectorAll('metrics-card-grid-component, .card-group')).length ?
          Array.from(document.querySelectorAll('metrics-card-groups-component .card-group')).map(group => ({
            name: (group.querySelector('.group-title') || {}).textContent?.trim(),
            cards: Array.from(group.querySelectorAll('scalar-card tb-truncated-path')).map(p => ({
              tag: p.getAttribute('title'), top: p.getBoundingClientRect().top})),
          })) : [];
        """
    )


def check_time_series(driver: Any, base: str, result: Result, shots: Path) -> None:
    page = "time series"
    viewport(driver, *FIRST_SCREEN)
    driver.get(f"{base}/#timeseries")
    try:
        groups = wait_until(
            "the Time Series groups",
            lambda: (lambda g: g if len(g) >= 4 and g[0]["cards"] else None)(time_series_groups(driver)),
        )
    except TimeoutError as exc:
        groups = time_series_groups(driver)
        result.check(page, "groups shown", False, f"{exc}: {groups}")
    time.sleep(0.5)
    groups = time_series_groups(driver)
    result.screenshots.append(save(driver, shots / "time_series.png"))
    names = [g["name"] for g in groups]
    result.check(page, "groups in order: what matters, then diagnostics", names[:4] == list(tags.GROUPS), names)
    if groups:
        first = [c["tag"] for c in groups[0]["cards"]]
        wanted = [tags.GAP, tags.TRAIN_LOSS, tags.VAL_LOSS, tags.TOTAL_NORM]
        result.check(page, "first cards: gap, train loss, val loss, norm", first[:4] == wanted, first)
        height = driver.execute_script("return window.innerHeight")
        tops = [c["top"] for c in groups[0]["cards"][:4]]
        result.check(page, "those four start in the first screen", len(tops) == 4 and max(tops) < height, tops)


def check_scalars(driver: Any, base: str, result: Result, shots: Path) -> None:
    page = "scalars"
    viewport(driver, *FIRST_SCREEN)
    driver.get(f"{base}/#scalars")

    def categories() -> list[str]:  # the Scalars dashboard's own groups (other tabs stay in the page)
        return driver.execute_script(
            """
            const dashboard = document.querySelector('tf-scalar-dashboard')
              || Array.from(document.querySelectorAll('*')).find(e => e.tagName === 'TF-SCALAR-DASHBOARD');
            if (!dashboard || !dashboard.shadowRoot) return [];
            const found = [];
            const walk = (root) => { found.push(...root.querySelectorAll('tf-category-paginated-view'));
              for (const el of root.querySelectorAll('*')) if (el.shadowRoot) walk(el.shadowRoot); };
            walk(dashboard.shadowRoot);
            return found.map(v => (v.category && v.category.name) || '').filter(Boolean);
            """
        )

    try:
        names = wait_until("the Scalars groups", lambda: (lambda c: c if len(c) >= 4 else None)(categories()))
    except TimeoutError as exc:
        names = categories()
        result.check(page, "groups shown", False, f"{exc}: {names}")
    time.sleep(0.5)
    result.screenshots.append(save(driver, shots / "scalars.png"))
    result.check(page, "groups in order: what matters, then diagnostics", names[:4] == list(tags.GROUPS), names)


def check_text(driver: Any, base: str, result: Result, shots: Path, events: dict[str, list[str]]) -> None:
    page = "text"
    viewport(driver, *FIRST_SCREEN)
    driver.get(f"{base}/#text")
    lines = [line for run in events.values() for line in run]

    def text() -> str:
        return str(driver.execute_script(_DEEP_TEXT))

    try:
        shown = wait_until("the events text", lambda: (lambda t: t if all(ln in t for ln in lines) else None)(text()))
    except TimeoutError:
        shown = text()
    result.screenshots.append(save(driver, shots / "text.png"))
    missing = [line for line in lines if line not in shown]
    result.check(page, "every event line shown exactly as written", lines and not missing, missing)
    result.check(page, f"the tag {tags.EVENTS_TEXT_SHOWN} shown", tags.EVENTS_TEXT_SHOWN in shown, shown[:300])
    result.check(page, "no JSON events in the Text tab", "events_json" not in shown and '"kind":' not in shown, "")


def check_report(driver: Any, page_path: Path, runs: list[str], result: Result, shots: Path) -> None:
    page = "report"
    url = page_path.resolve().as_uri()
    for width in (1000, 1600):
        viewport(driver, width, 900)
        driver.get(url)
        wait_until(
            "the report's images",
            lambda: driver.execute_script(
                "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
            ),
        )
        info = driver.execute_script(
            """
            const rows = Array.from(document.querySelectorAll('table')[0].querySelectorAll('tbody tr'));
            return {
              rows: rows.map(r => r.cells[0].textContent),
              headers: Array.from(document.querySelectorAll('table')[0].querySelectorAll('th')).map(h => h.textContent),
              images: Array.from(document.images).map(i => ({alt: i.alt, natural: i.naturalWidth,
                 shown: i.getBoundingClientRect().width, right: i.getBoundingClientRect().right})),
              page: document.documentElement.clientWidth,
              links: document.querySelectorAll('a.full').length,
            };
            """
        )
        result.screenshots.append(save(driver, shots / f"report_{width}px.png"))
        result.check(page, f"summary table, a row per run ({width} px)", info["rows"] == runs, info["rows"])
        result.check(page, "summary has final norm after restore", "final norm" in info["headers"], info["headers"])
        images = info["images"]
        result.check(
            page,
            f"one figure per run ({width} px)",
            [i["alt"] for i in images] == [f"normguard report of {run}" for run in runs],
            images,
        )
        for image in images:
            result.check(
                page,
                f"{image['alt']} at its design size, inside the window ({width} px)",
                abs(image["shown"] - image["natural"] / 2) <= 1 and image["right"] <= info["page"],
                image,
            )
        result.check(page, f"a full-size link per figure ({width} px)", info["links"] == len(runs), info)
    driver.execute_script("document.querySelector('a.full').click()")
    time.sleep(0.5)
    full = driver.execute_script(
        "const i = document.querySelector('figure:target img'); "
        "return i ? [i.getBoundingClientRect().width, i.naturalWidth] : null"
    )
    result.screenshots.append(save(driver, shots / "report_full_size.png"))
    result.check(page, "the full-size link shows the image at full size", full and abs(full[0] - full[1]) <= 1, full)


# ---------------------------------------------------------------------------- the documentation site


def have_mkdocs() -> bool:
    """Whether the ``docs`` extra (mkdocs, mkdocs-material, mkdocstrings[python]) is installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("mkdocs", "material", "mkdocstrings"))


def build_site(site: Path, log: Path) -> None:
    """``mkdocs build --strict`` of this checkout into ``site``; raises with the build's log on failure."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"mkdocs build --strict failed:\n{proc.stderr[-2000:]}")


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """A static HTTP server for ``folder`` on loopback (a thread), its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # no request lines on stderr
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


_SITE_PAGE = """
const nav = document.querySelector('nav.md-nav--primary');
const h1 = document.querySelector('article h1');
const heading = h1 ? h1.cloneNode(true) : null;
if (heading) heading.querySelectorAll('.headerlink').forEach(a => a.remove());  // the permalink's mark
return {
  title: document.title,
  h1: heading ? heading.textContent.trim() : null,
  nav: nav ? Array.from(nav.querySelectorAll('a.md-nav__link')).map(a => [a.textContent.trim(), a.href]) : [],
  images: Array.from(document.querySelectorAll('article img'))
    .map(i => [i.getAttribute('src'), i.complete && i.naturalWidth]),
  code: document.querySelectorAll('article pre code').length,
  api: document.querySelectorAll('article .doc-object, article .doc').length,
  text: document.body.innerText.slice(0, 2000),
};
"""


def site_page(driver: Any, url: str) -> dict[str, Any]:
    driver.get(url)
    wait_until(f"{url} to render", lambda: driver.execute_script("return document.readyState") == "complete")
    wait_until(
        f"{url}'s images",
        lambda: driver.execute_script("return Array.from(document.images).every(i => i.complete)"),
    )
    return dict(driver.execute_script(_SITE_PAGE))


def check_rendered(page: str, info: dict[str, Any], h1: str, result: Result) -> None:
    result.check(page, "title names normguard", "normguard" in info["title"], info["title"])
    result.check(page, "not the 404 page", "404" not in info["title"] and info["h1"] != "404 - Not found", info)
    result.check(page, f"first heading is {h1!r}", info["h1"] == h1, info["h1"])
    result.check(page, "the navigation lists the guides", len(info["nav"]) >= 10, info["nav"])
    broken = [src for src, width in info["images"] if not width]
    result.check(page, "every picture loaded", not broken, broken)


def check_site(driver: Any, base: str, result: Result, shots: Path) -> None:
    viewport(driver, *FIRST_SCREEN)
    home = site_page(driver, f"{base}/")
    result.screenshots.append(save(driver, shots / "site_home.png"))
    check_rendered("site", home, "normguard", result)
    result.check("site", "the home page shows the report picture", len(home["images"]) >= 1, home["images"])
    link, heading = SITE_GUIDE
    target = next((href for text, href in home["nav"] if text == link), None)
    result.check("site", f"the navigation links the {link} guide", target is not None, home["nav"])
    if target is None:
        return
    guide = site_page(driver, target)
    result.screenshots.append(save(driver, shots / "site_guide.png"))
    check_rendered("site guide", guide, heading, result)
    result.check("site guide", "code blocks shown", guide["code"] >= 2, guide["code"])
    api = site_page(driver, f"{base}/api/doors/")
    result.screenshots.append(save(driver, shots / "site_api.png"))
    check_rendered("site api", api, "Front doors", result)
    result.check(
        "site api",
        "the generated reference of NormGuard is shown",
        api["api"] > 0 and "NormGuardCallback" in api["text"],
        api["text"][:300],
    )


def save(driver: Any, path: Path) -> str:
    driver.save_screenshot(str(path))
    return str(path)


# ---------------------------------------------------------------------------- main


def run_checks(out_dir: Path) -> Result:
    """Everything above; raises ``RuntimeError`` naming what is missing if no browser can run."""
    browser = find_browser()
    if isinstance(browser, str):
        raise RuntimeError(browser)
    chromium, chromedriver = browser
    out_dir.mkdir(parents=True, exist_ok=True)
    result = Result(str(out_dir))
    with tempfile.TemporaryDirectory(prefix="normguard-browser-") as scratch:
        work = Path(scratch)
        log_dir = work / "logs"
        clock = time.perf_counter()
        events = write_runs(log_dir)
        result.seconds["training"] = time.perf_counter() - clock
        result.check(
            "runs",
            "the guarded run fired, raised weight decay and stopped",
            all(
                any(f"[{kind}]" in line for line in events["guarded"])
                for kind in ("detector_fired", "weight_decay_changed", "stop", "restore")
            ),
            events["guarded"],
        )
        site = work / "site" if have_mkdocs() else None
        if site is not None:
            clock = time.perf_counter()
            build_site(site, work / "mkdocs.log")
            result.seconds["building the site"] = time.perf_counter() - clock
        else:
            result.notes.append("documentation site not checked: the docs extra (mkdocs) is not installed")
        clock = time.perf_counter()
        page_path = out_dir / "report.html"
        runs = report.load_runs(log_dir)
        report.plot_report(runs, page_path)
        result.seconds["drawing the report"] = time.perf_counter() - clock
        clock = time.perf_counter()
        with (
            tensorboard(log_dir, list(events), work / "tensorboard.log") as base,
            chrome(chromium, chromedriver, work / "profile") as driver,
            serve(site if site is not None else work) as site_base,
        ):
            pages: list[tuple[str, Callable[[], None]]] = [
                ("custom scalars", lambda: check_custom_scalars(driver, base, result, out_dir)),
                ("time series", lambda: check_time_series(driver, base, result, out_dir)),
                ("scalars", lambda: check_scalars(driver, base, result, out_dir)),
                ("text", lambda: check_text(driver, base, result, out_dir, events)),
                ("report", lambda: check_report(driver, page_path, list(runs), result, out_dir)),
            ]
            if site is not None:
                pages.append(("site", lambda: check_site(driver, site_base, result, out_dir)))
            result.seconds["tensorboard and chromium"] = time.perf_counter() - clock
            for name, check in pages:
                clock = time.perf_counter()
                try:
                    check()
                except Exception as exc:  # one page failing must not hide the others' results
                    result.check(name, "page loaded and checked", False, f"{type(exc).__name__}: {exc}")
                errors = console_errors(driver)
                result.console[name] = errors
                result.check(name, "no console errors", not errors, errors)
                result.seconds[name] = time.perf_counter() - clock
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for the screenshots (default: a new temporary one)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="normguard-screens-"))
    try:
        result = run_checks(out_dir)
    except RuntimeError as exc:
        print(f"browser_check: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"ok": result.ok, **asdict(result)}, indent=2))
    else:
        for c in result.checks:
            print(f"{'ok  ' if c.ok else 'FAIL'} {c.page}: {c.what}" + (f"\n       {c.detail}" if c.detail else ""))
        for note in result.notes:
            print(f"note: {note}")
        print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
        print(f"screenshots in {result.out_dir}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
