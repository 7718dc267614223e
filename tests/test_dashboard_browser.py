"""The dashboard end to end in a real browser: Debian's chromium driven by Playwright.

A live server (Werkzeug, threaded, 127.0.0.1, auth required, live samples every second)
serves the dashboard; the test logs in, watches the live metrics move, loads the real
Qwen model and watches its progress bar, streams a chat (and stops one), creates an API
key (shown once, and working), revokes it (and it stops working), and visits every page.
Screenshots of each page go to ``test-artifacts/dashboard/``.

The browser is only ever launched by its path (``/usr/bin/chromium``, installed with apt
by ``scripts/ensure_chromium.sh``); nothing downloads one. Without it the test is skipped,
unless ``LLAMA_GPU_REQUIRE_SERVICES=1``, where it fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import BaseWSGIServer, make_server

from llama_gpu import Kernel
from llama_gpu.api import create_app

from .conftest import make_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
PASSWORD = "dashboard-browser-test-pw"
CHAT_MODEL = "qwen2.5-coder-0.5b-instruct"

pytestmark = pytest.mark.timeout(600)


def _chromium() -> str:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    reason = f"{CHROMIUM} is missing: run scripts/ensure_chromium.sh (apt-get install chromium)"
    if os.environ.get("LLAMA_GPU_REQUIRE_SERVICES") == "1":
        pytest.fail(f"LLAMA_GPU_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def chromium() -> str:
    """The browser's path (checked before the server starts: a skip costs nothing)."""
    return _chromium()


@dataclass
class LiveServer:
    """A kernel and its app on a Werkzeug server in a thread."""

    kernel: Kernel
    server: BaseWSGIServer
    thread: threading.Thread
    url: str

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kw)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    # bound first: the server's configured address is where its self-benchmarks go (never the request's Host)
    server = make_server("127.0.0.1", 0, lambda environ, start: [], threaded=True)
    settings = make_settings(
        tmp_path,
        port=server.server_port,
        auth="required",
        metrics_interval=1.0,
        metrics_store_interval=2.0,
        default_model=CHAT_MODEL,
        parallel=2,
        keep_alive=-1,
        model_store=str(tmp_path / "store"),  # a store of its own: the page shows the model being assembled
    )
    kernel = Kernel(settings).start()
    app = create_app(kernel=kernel)
    kernel.services["accounts"].create_user("admin", PASSWORD, "admin")
    server.app = app
    thread = threading.Thread(target=server.serve_forever, name="dashboard-test-server", daemon=True)
    thread.start()
    live = LiveServer(kernel, server, thread, f"http://127.0.0.1:{server.server_port}")
    try:
        yield live
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        kernel.stop(timeout=10)


def test_the_page_and_every_asset_come_from_the_package(tmp_path: Path) -> None:
    """No browser needed: ``/`` and each script and stylesheet it names are served here, none from elsewhere."""
    for auth in ("required", "off"):
        kernel = Kernel(make_settings(tmp_path / auth, auth=auth)).start()
        try:
            client = create_app(kernel=kernel).test_client()
            page = client.get("/")
            assert page.status_code == 200 and page.mimetype == "text/html"
            html = page.get_data(as_text=True)
            assert f'data-auth="{auth}"' in html
            assert "default-src 'self'" in page.headers["Content-Security-Policy"]
            assets = re.findall(r'(?:src|href)="([^"#]+)"', html)
            assert not [a for a in assets if not a.startswith(("/dashboard/static/", "data:"))], assets
            served = [a for a in assets if a.startswith("/dashboard/static/")]
            names = {a.split("?")[0].rsplit("/", 1)[-1] for a in served}
            assert {"socket.io.min.js", "chart.umd.js", "app.css", "app.js"} <= names, names
            for asset in served:
                response = client.get(asset)
                assert response.status_code == 200 and len(response.get_data()) > 500, asset
                response.close()
            assert client.get("/dashboard/static/missing.js").status_code == 404
        finally:
            kernel.stop(timeout=5)


def _shot(page: Any, name: str, full_page: bool = True) -> Path:
    """Save a screenshot into the artifacts (full page, scrolled to the top; dialogs: the viewport)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.evaluate("() => window.scrollTo(0, 0)")  # the sticky sidebar stays with the top of the page
    page.screenshot(path=str(path), full_page=full_page)
    return path


def _int(page: Any, selector: str) -> int:
    return int(page.locator(selector).inner_text().strip() or "0")


@contextlib.contextmanager
def watched_page(chromium: str, base: str, ignore_console: str | None = None) -> Iterator[tuple[Any, list[str]]]:
    """A page in Debian's chromium; afterwards no request may have left the server and no error been logged.

    Yields the page and the list of problems (page errors, console errors without ``ignore_console``), which a
    test clears after an error it provoked on purpose.
    """
    from playwright.sync_api import sync_playwright

    foreign: list[str] = []
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(30_000)
            # every asset comes from the server itself: nothing from a CDN
            page.on(
                "request",
                lambda r: None if r.url.startswith((base, "data:", "blob:")) else foreign.append(r.url),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

            def console(m: Any) -> None:
                if m.type == "error" and (ignore_console is None or ignore_console not in m.text):
                    problems.append(f"console {m.type}: {m.text}")

            page.on("console", console)
            yield page, problems
        finally:
            browser.close()
    assert not foreign, f"requests left the server: {foreign}"
    assert not problems, problems


def test_dashboard_end_to_end_in_chromium(chromium: str, live_server: LiveServer) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    with watched_page(chromium, base) as (page, problems):
        # ---------------------------------------------------------------- login
        page.goto(base + "/")
        expect(page.get_by_test_id("login-view")).to_be_visible()
        _shot(page, "01-login")
        page.get_by_test_id("login-username").fill("admin")
        page.get_by_test_id("login-password").fill("wrong password")
        page.get_by_test_id("login-submit").click()
        error = page.get_by_test_id("login-error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("AUTHENTICATION_FAILED")  # the API envelope's code, shown
        _shot(page, "02-login-error")
        problems.clear()  # the 401 of the wrong password is logged by the browser as a failed load
        page.get_by_test_id("login-password").fill(PASSWORD)
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("app-view")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('llama_gpu.token')"), "the JWT is kept in sessionStorage"

        # ---------------------------------------------------------------- overview: live metrics
        expect(page.get_by_test_id("page-overview")).to_be_visible()
        expect(page.get_by_test_id("conn-status")).to_have_text("live", timeout=15_000)
        page.wait_for_function("() => Number(document.getElementById('live-samples').textContent) >= 1", timeout=15_000)
        first = _int(page, "#live-samples")
        first_points = int(page.get_attribute("#chart-cpu", "data-points") or "0")
        page.wait_for_function(
            "(n) => Number(document.getElementById('live-samples').textContent) >= n", arg=first + 2, timeout=15_000
        )
        assert int(page.get_attribute("#chart-cpu", "data-points") or "0") > first_points
        assert re.fullmatch(r"\d+(\.\d+)?%", page.locator("#now-cpu").inner_text())
        page.wait_for_function(
            "() => Number(document.getElementById('chart-tokens').dataset.points) >= 2", timeout=15_000
        )
        expect(page.get_by_test_id("stat-status")).not_to_have_text("—")
        expect(page.get_by_test_id("stat-uptime")).not_to_have_text("—")
        _shot(page, "03-overview")

        # ---------------------------------------------------------------- models: load with progress
        page.get_by_test_id("nav-models").click()
        expect(page.get_by_test_id(f"model-row-{CHAT_MODEL}")).to_be_visible()
        # record every state the progress bar goes through
        page.evaluate(
            """(id) => {
              window.__progress = [];
              const body = document.getElementById('models-body');
              const seen = () => {
                const bar = body.querySelector(`[data-testid="model-progress-${id}"]`);
                if (bar) window.__progress.push([bar.dataset.status, Number(bar.getAttribute('aria-valuenow'))]);
              };
              new MutationObserver(seen).observe(body, {subtree: true, childList: true, attributes: true});
            }""",
            CHAT_MODEL,
        )
        page.get_by_test_id(f"model-load-{CHAT_MODEL}").click()
        bar = page.get_by_test_id(f"model-progress-{CHAT_MODEL}")
        expect(bar).to_have_attribute("data-status", "loading", timeout=10_000)
        page.wait_for_function(
            """(id) => {
              const b = document.querySelector(`[data-testid="model-progress-${id}"]`);
              return b && (b.dataset.status !== 'loading' || Number(b.getAttribute('aria-valuenow')) > 0);
            }""",
            arg=CHAT_MODEL,
            timeout=60_000,
        )
        _shot(page, "04-models-loading")
        expect(page.get_by_test_id(f"model-status-{CHAT_MODEL}")).to_have_text("loaded", timeout=180_000)
        expect(bar).to_have_attribute("aria-valuenow", "100")
        expect(page.get_by_test_id(f"model-unload-{CHAT_MODEL}")).to_be_visible()
        seen = page.evaluate("window.__progress")
        partial = sorted({v for s, v in seen if s == "loading" and 0 < v < 100})
        assert partial, f"the progress bar never showed a partial load: {seen}"
        assert seen[-1] == ["loaded", 100]
        expect(page.get_by_test_id("toast-ok").first).to_contain_text("loaded in")
        _shot(page, "05-models-loaded")

        # ---------------------------------------------------------------- plugins: list, config errors
        page.get_by_test_id("nav-plugins").click()
        expect(page.get_by_test_id("plugin-row-monitoring")).to_be_visible()
        expect(page.get_by_test_id("plugin-status-monitoring")).to_have_text("loaded")
        expect(page.get_by_test_id("plugin-row-monitoring")).to_contain_text("0.1.0")
        page.get_by_test_id("plugin-config-prometheus").click()
        editor = page.get_by_test_id("plugin-config-text")
        expect(editor).to_have_value(re.compile(r'"enabled": (true|false)'))
        good = editor.input_value()
        editor.fill('{"priority": 5000}')  # out of range: the API refuses, the dialog shows why
        page.get_by_test_id("modal-confirm").click()
        expect(page.get_by_test_id("modal-error")).to_contain_text("INVALID_INPUT")
        _shot(page, "06-plugins-config-error", full_page=False)
        editor.fill(good)
        page.get_by_test_id("modal-confirm").click()
        expect(page.get_by_test_id("modal")).to_be_hidden()
        expect(page.get_by_test_id("toast-ok").last).to_contain_text("configuration saved")
        # unload a plugin and load it again
        page.get_by_test_id("plugin-unload-limits").click()
        page.get_by_test_id("modal-confirm").click()
        expect(page.get_by_test_id("plugin-status-limits")).not_to_have_text("loaded")
        assert live_server.kernel.plugins.get("limits").status != "loaded"
        page.get_by_test_id("plugin-load-limits").click()
        expect(page.get_by_test_id("plugin-status-limits")).to_have_text("loaded")
        expect(page.get_by_test_id("plugin-events")).to_contain_text("unloaded limits")
        _shot(page, "07-plugins")
        problems.clear()  # the refused PUT (400) is logged by the browser as a failed load

        # ---------------------------------------------------------------- playground: streamed chat
        page.get_by_test_id("nav-playground").click()
        page.get_by_test_id("chat-model").select_option(CHAT_MODEL)
        page.get_by_test_id("chat-max-tokens").fill("24")
        page.get_by_test_id("chat-temperature").fill("0")
        page.evaluate(
            """() => { window.__chunks = 0;
              new MutationObserver((ms) => { window.__chunks += ms.length; })
                .observe(document.getElementById('chat-log'),
                         {subtree: true, childList: true, characterData: true});
            }"""
        )
        page.get_by_test_id("chat-input").fill("Write a Python function that adds two numbers.")
        page.get_by_test_id("chat-send").click()
        expect(page.get_by_test_id("chat-msg-user")).to_have_text("Write a Python function that adds two numbers.")
        answer = page.get_by_test_id("chat-msg-assistant").last
        expect(page.get_by_test_id("chat-meta").last).to_be_visible(timeout=120_000)
        text = answer.inner_text()
        assert len(text.strip()) > 0, "no text arrived"
        assert page.evaluate("window.__chunks") > 3, "the answer arrived in one piece, not streamed"
        expect(page.get_by_test_id("chat-meta").last).to_contain_text(CHAT_MODEL)
        expect(page.get_by_test_id("chat-usage")).to_contain_text("Completion tokens: ")
        _shot(page, "08-playground")

        # the stop button cancels a running chat
        page.get_by_test_id("chat-max-tokens").fill("400")
        page.get_by_test_id("chat-input").fill("Count from 1 to 200, one number per line.")
        page.get_by_test_id("chat-send").click()
        streaming = page.locator(".msg-assistant.streaming")
        page.wait_for_function(
            "() => { const m = document.querySelector('.msg-assistant.streaming'); "
            "return m && m.textContent.length > 0; }",
            timeout=60_000,
        )
        page.get_by_test_id("chat-stop").click()
        expect(page.get_by_test_id("chat-status")).to_have_text("stopped", timeout=15_000)
        expect(streaming).to_have_count(0)
        expect(page.get_by_test_id("chat-send")).to_be_enabled()
        _shot(page, "09-playground-stopped")

        # the overview shows the chats: request rate, tokens/s and latency from inference_stats
        page.get_by_test_id("nav-overview").click()
        page.wait_for_function(
            "() => ['requests', 'tokens', 'latency'].every((n) => "
            "Chart.getChart(document.getElementById(`chart-${n}`)).data.datasets[0].data.some((v) => v > 0))",
            timeout=15_000,
        )
        expect(page.locator("#now-requests")).not_to_have_text("0 / min")
        # the status cards (the request log, refreshed every 10 s) count the chats too
        expect(page.get_by_test_id("stat-requests")).to_have_text(re.compile(r"^[1-9]\d*$"), timeout=15_000)
        # the stopped chat left the engine: nothing runs or waits any more
        expect(page.locator("#stat-queue")).to_have_text("0 running · 0 waiting", timeout=10_000)
        _shot(page, "10-overview-after-chat")

        # ---------------------------------------------------------------- logs: level filter
        page.get_by_test_id("nav-logs").click()
        expect(page.get_by_test_id("log-row").first).to_be_visible()
        levels = set(page.locator("[data-testid=log-row]").evaluate_all("rs => rs.map(r => r.dataset.level)"))
        assert levels <= {"INFO", "WARNING", "ERROR", "CRITICAL"} and levels, levels
        _shot(page, "11-logs")
        page.get_by_test_id("logs-level").select_option("ERROR")
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=log-row]')]"
            ".every(r => ['ERROR', 'CRITICAL'].includes(r.dataset.level))"
        )

        # ---------------------------------------------------------------- API keys: create once, revoke
        page.get_by_test_id("nav-keys").click()
        page.get_by_test_id("key-name").fill("browser-test key")
        page.get_by_test_id("key-create").click()
        expect(page.get_by_test_id("key-created")).to_be_visible()
        secret = page.get_by_test_id("key-secret").inner_text().strip()
        key_id = page.get_attribute("[data-testid=key-created]", "data-key-id")
        assert secret and key_id
        assert live_server.api("GET", "/api/v1/models", secret).status_code == 200, "the shown key works"
        row = page.get_by_test_id(f"key-row-{key_id}")
        expect(row).to_contain_text("browser-test key")
        expect(row).not_to_contain_text(secret)  # the table shows the prefix only
        _shot(page, "12-keys-created")
        page.get_by_test_id("nav-alerts").click()
        page.get_by_test_id("nav-keys").click()
        expect(page.get_by_test_id("key-created")).to_be_hidden()  # shown once
        assert secret not in page.content()
        page.get_by_test_id(f"key-revoke-{key_id}").click()
        expect(page.get_by_test_id("modal")).to_be_visible()
        page.get_by_test_id("modal-confirm").click()
        expect(page.get_by_test_id(f"key-status-{key_id}")).to_have_text("revoked")
        assert live_server.api("GET", "/api/v1/models", secret).status_code == 401, "a revoked key is refused"
        _shot(page, "13-keys-revoked")

        # ---------------------------------------------------------------- alerts
        page.get_by_test_id("nav-alerts").click()
        expect(page.get_by_test_id("rules-table").locator("tbody tr").first).to_be_visible()
        expect(page.get_by_test_id("alerts-table")).to_be_visible()
        _shot(page, "14-alerts")

        # ---------------------------------------------------------------- unload the model
        page.get_by_test_id("nav-models").click()
        page.get_by_test_id(f"model-unload-{CHAT_MODEL}").click()
        page.get_by_test_id("modal-confirm").click()
        expect(page.get_by_test_id(f"model-status-{CHAT_MODEL}")).to_have_text("available")
        expect(page.get_by_test_id(f"model-load-{CHAT_MODEL}")).to_be_enabled()
        assert not live_server.kernel.registry.describe(CHAT_MODEL)["loaded"]

        # ---------------------------------------------------------------- logout
        token = page.evaluate("sessionStorage.getItem('llama_gpu.token')")
        assert live_server.api("GET", "/v1/auth/user", token).status_code == 200
        page.get_by_test_id("logout").click()
        expect(page.get_by_test_id("login-view")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('llama_gpu.token')") is None
        assert live_server.api("GET", "/v1/auth/user", token).status_code == 401, "logout revoked the token"
        page.reload()
        expect(page.get_by_test_id("login-view")).to_be_visible()


def test_benchmarks_page_in_chromium(chromium: str, live_server: LiveServer) -> None:
    """Start a benchmark of the echo model from the page, watch its live progress, read the results and charts,
    and cancel a second one."""
    from playwright.sync_api import expect

    base = live_server.url
    with watched_page(chromium, base) as (page, _):
        page.goto(base + "/")
        page.get_by_test_id("login-username").fill("admin")
        page.get_by_test_id("login-password").fill(PASSWORD)
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("conn-status")).to_have_text("live", timeout=15_000)
        page.get_by_test_id("nav-benchmarks").click()
        expect(page.get_by_test_id("page-benchmarks")).to_be_visible()
        expect(page.locator("#bench-body")).to_contain_text("No benchmarks yet")
        # what the page's own socket receives on the "benchmarks" channel
        page.evaluate(
            "() => { window.benchEvents = []; "
            "LG.live.socket.onAny((name) => name.startsWith('benchmark.') && window.benchEvents.push(name)); }"
        )

        # ---------------------------------------------------------------- a time-bounded sweep: 2 runs of 2 s
        page.get_by_test_id("bench-model").select_option("echo")
        page.get_by_test_id("bench-endpoint").select_option("completions")  # echo has no chat template
        page.get_by_test_id("bench-scenario").fill("D(20,8)")
        page.get_by_test_id("bench-users").fill("1,2")
        page.get_by_test_id("bench-requests").fill("")
        page.get_by_test_id("bench-time").fill("2")
        page.get_by_test_id("bench-start").click()
        expect(page.get_by_test_id("toast-ok")).to_contain_text("queued")
        row = page.locator("[data-testid^=bench-row-]").first
        job_id = int((row.get_attribute("data-testid") or "").rsplit("-", 1)[1])
        expect(page.get_by_test_id(f"bench-status-{job_id}")).to_have_text("running", timeout=10_000)
        expect(page.get_by_test_id(f"bench-note-{job_id}")).to_contain_text("done", timeout=10_000)
        page.wait_for_function(
            f"() => Number(document.querySelector('[data-testid=bench-progress-{job_id}]')"
            ".getAttribute('aria-valuenow')) > 0"
        )
        _shot(page, "15-benchmark-running")
        expect(page.get_by_test_id(f"bench-status-{job_id}")).to_have_text("completed", timeout=30_000)
        results = page.get_by_test_id("bench-results")
        expect(results).to_be_visible()
        expect(page.get_by_test_id("bench-results-title")).to_contain_text(f"#{job_id}")
        expect(page.get_by_test_id("bench-result-row")).to_have_count(2)
        for canvas in ("bench-chart-throughput", "bench-chart-latency"):
            page.wait_for_function(
                f"() => Chart.getChart(document.getElementById('{canvas}')).data.datasets[0].data"
                ".filter((v) => v > 0).length === 2"
            )
        events = page.evaluate("() => window.benchEvents")
        assert events[0] == "benchmark.started" and events[-1] == "benchmark.completed", events
        assert "benchmark.progress" in events and "benchmark.failed" not in events, events
        stored = live_server.kernel.services["benchmarks"].get(job_id, _admin())
        assert stored.status == "completed" and len(stored.results["runs"]) == 2
        _shot(page, "16-benchmark-results")

        # ---------------------------------------------------------------- a long one, cancelled from the page
        page.get_by_test_id("bench-time").fill("120")
        page.get_by_test_id("bench-users").fill("1")
        page.get_by_test_id("bench-start").click()
        page.wait_for_function("() => [...document.querySelectorAll('[data-testid^=bench-row-]')].length === 2")
        second = page.locator("[data-testid^=bench-row-]").first
        second_id = int((second.get_attribute("data-testid") or "").rsplit("-", 1)[1])
        assert second_id != job_id
        expect(page.get_by_test_id(f"bench-status-{second_id}")).to_have_text("running", timeout=10_000)
        page.get_by_test_id(f"bench-cancel-{second_id}").click()
        page.get_by_test_id("modal-confirm").click()
        expect(page.get_by_test_id(f"bench-status-{second_id}")).to_have_text("cancelled", timeout=15_000)
        expect(page.get_by_test_id(f"bench-results-{second_id}")).to_be_enabled()
        _shot(page, "17-benchmark-cancelled")


def _admin() -> Any:
    from llama_gpu.kernel.types import Identity

    return Identity(id="test", kind="system", roles=frozenset({"admin"}))


def test_conversion_page_in_chromium(chromium: str, live_server: LiveServer) -> None:
    """Re-quantize the bundled Gemma to q8_0 from the Conversion page: live progress, the completed row with its
    size change, errors from the API shown, and the new model on the Models page."""
    from playwright.sync_api import expect

    source, target = "gemma-3-270m", "gemma-3-270m-q4_k_m-q8_0"
    base = live_server.url
    with watched_page(chromium, base, ignore_console="409") as (page, _):
        page.goto(base + "/")
        page.get_by_test_id("login-username").fill("admin")
        page.get_by_test_id("login-password").fill(PASSWORD)
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("conn-status")).to_have_text("live", timeout=15_000)
        page.get_by_test_id("nav-convert").click()
        expect(page.get_by_test_id("page-convert")).to_be_visible()
        expect(page.locator("#convert-body")).to_contain_text("No conversions yet")
        # the sources are the GGUF models only (no echo, no safetensors embedding model)
        expect(page.locator(f"#convert-source option[value='{source}']")).to_have_count(1)
        options = page.locator("#convert-source option").all_inner_texts()
        assert source in options and "echo" not in options and "all-minilm-l6-v2" not in options, options
        # what the page's socket receives on the "convert" channel, and what its progress bars showed
        page.evaluate(
            """() => {
              window.convertEvents = []; window.convertSeen = {percents: [], statuses: []};
              LG.live.socket.onAny((name, payload) => name.startsWith('convert.') &&
                window.convertEvents.push([name, payload && payload.progress]));
              new MutationObserver(() => {
                for (const bar of document.querySelectorAll('[data-testid^=convert-progress-]'))
                  window.convertSeen.percents.push(Number(bar.getAttribute('aria-valuenow')));
                for (const s of document.querySelectorAll('[data-testid^=convert-status-]'))
                  window.convertSeen.statuses.push(s.textContent);
              }).observe(document.getElementById('convert-body'), {childList: true, subtree: true});
            }"""
        )

        page.get_by_test_id("convert-source").select_option(source)
        page.get_by_test_id("convert-quantization").select_option("q8_0")
        page.get_by_test_id("convert-start").click()
        expect(page.get_by_test_id("toast-ok")).to_contain_text("queued")
        row = page.locator("[data-testid^=convert-row-]").first
        job_id = int((row.get_attribute("data-testid") or "").rsplit("-", 1)[1])
        expect(page.get_by_test_id(f"convert-output-{job_id}")).to_have_text(f"{target}.gguf")
        expect(page.get_by_test_id(f"convert-status-{job_id}")).to_have_text("completed", timeout=60_000)
        progress = page.get_by_test_id(f"convert-progress-{job_id}")
        expect(progress).to_have_attribute("aria-valuenow", "100")
        seen = page.evaluate("() => window.convertSeen")
        assert "running" in seen["statuses"], seen["statuses"]
        assert any(0 < v < 100 for v in seen["percents"]), seen["percents"]
        events = page.evaluate("() => window.convertEvents")
        names = [name for name, _ in events]
        assert names[0] == "convert.started" and names[-1] == "convert.completed", names
        assert "convert.progress" in names and "convert.failed" not in names, names
        assert any(0 < (p or 0) < 1 for name, p in events if name == "convert.progress"), events
        # q4_k_m → q8_0 is larger: the row says by how much
        stored = live_server.kernel.services["conversions"].get(job_id, _admin())
        results = stored.results
        assert stored.status == "completed" and results["output_bytes"] > results["source_bytes"], results
        change = round(-100 * results["size_reduction"], 1)
        expect(page.get_by_test_id(f"convert-reduction-{job_id}")).to_contain_text(f"+{change}%")
        expect(page.get_by_test_id(f"convert-reduction-{job_id}")).to_contain_text("larger")
        expect(page.get_by_test_id(f"convert-size-{job_id}")).to_contain_text("MB →")
        expect(page.get_by_test_id(f"convert-duration-{job_id}")).to_contain_text(" s")
        expect(page.get_by_test_id(f"convert-cancel-{job_id}")).to_have_count(0)

        # the same conversion again: the API refuses it (the output exists), and the page says why
        page.get_by_test_id("convert-start").click()
        expect(page.get_by_test_id("convert-error")).to_be_visible()
        expect(page.get_by_test_id("convert-error")).to_contain_text("exists already")
        expect(page.locator("[data-testid^=convert-row-]")).to_have_count(1)
        _shot(page, "18-conversion")

        # the converted model is in the catalog, on the Models page, ready to load
        page.get_by_test_id("nav-models").click()
        expect(page.get_by_test_id(f"model-row-{target}")).to_be_visible()
        expect(page.get_by_test_id(f"model-load-{target}")).to_be_enabled()
