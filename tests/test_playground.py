"""The playground at GET /, driven in Debian's headless Chromium against a real server on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.servers import Server, create_key, media_server

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path(os.environ.get("MARIONET_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous: the CPU engine on a 3.5 s clip takes tens of seconds on a busy two-core machine.
TASK_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`marionet serve` on a free loopback port with a fresh data dir."""
    server = Server(tmp_path_factory.mktemp("playground-data")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return create_key(server.data_dir, "playground")


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium through Playwright; a missing binary fails with the lines that install it."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} not found: the playground tests need Debian's chromium. Install it with\n"
            "  apt-get update -qq && apt-get install -y -qq chromium\n"
            "or point MARIONET_CHROMIUM at a Chromium binary."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, server: Server, key: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.fill("#api-key", key)
    yield page
    context.close()
    assert errors == [], f"uncaught JavaScript errors: {errors}"


def _record_progress(page) -> None:
    """Keeps every value the progress bar takes in window.progressSeen, whatever the polling rhythm."""
    page.evaluate(
        """() => {
          const bar = document.getElementById('progress');
          window.progressSeen = [bar.value];
          new MutationObserver(() => window.progressSeen.push(bar.value))
            .observe(bar, {attributes: true, attributeFilter: ['value']});
        }"""
    )


def test_upload_generate_and_play(page, server: Server, key: str, data_dir: Path) -> None:
    page.set_input_files("#image-file", str(data_dir / "halfbody_ref_elf.jpg"))
    page.set_input_files("#video-file", str(data_dir / "halfbody_talk_3s.mp4"))
    page.wait_for_function("document.getElementById('image-preview').naturalWidth > 0")
    assert page.evaluate("document.getElementById('image-preview').naturalWidth") == 1280
    page.check("input[name=keep_original_sound][value=no]")
    page.fill("#prompt", "the elf gestures like the presenter")
    _record_progress(page)

    with page.expect_response(lambda r: r.url.endswith("/v1/videos/generations")) as created:
        page.click("#submit")
    task_id = created.value.json()["id"]

    page.wait_for_function(
        "document.getElementById('result-video').readyState >= 2 || !document.getElementById('error').hidden",
        timeout=TASK_TIMEOUT_MS,
    )
    assert page.is_hidden("#error"), page.inner_text("#error")
    assert page.evaluate("document.getElementById('result-video').readyState") >= 2

    seen = page.evaluate("window.progressSeen")
    print("progress seen:", seen)
    assert seen[0] == 0 and seen[-1] == 100, seen
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    assert any(0 < value < 100 for value in seen), f"no intermediate progress shown: {seen}"

    with server.client(key) as api:
        task = api.get(f"/v1/tasks/{task_id}").json()
    assert task["status"] == "completed"
    # Each read signs the link afresh (new expiry), so compare the result's path, not the whole URL.
    href = page.get_attribute("#download", "href")
    assert urlsplit(href).path == urlsplit(task["results"][0]).path
    assert page.evaluate("document.getElementById('result-video').currentSrc") == href
    video_size = page.evaluate(
        "[document.getElementById('result-video').videoWidth, document.getElementById('result-video').videoHeight]"
    )
    assert min(video_size) > 0
    # The output lasts as long as the driving video (3.53 s) and seeks: stop mid-motion for the screenshot.
    duration = page.evaluate(
        """() => new Promise(resolve => {
          const video = document.getElementById('result-video');
          video.pause();
          video.addEventListener('seeked', () => resolve(video.duration), {once: true});
          video.currentTime = video.duration / 2;
        })"""
    )
    assert abs(duration - 3.53) < 0.3

    row = page.locator(f"#tasks-body tr[data-task-id='{task_id}']")
    row.locator(".badge.completed").wait_for()
    assert row.locator(".badge").inner_text() == "completed"

    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)
    assert (ARTIFACTS / "playground.png").stat().st_size > 10_000

    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") == 0
    assert page.locator("#result-video").bounding_box()["width"] <= 390
    page.screenshot(path=str(ARTIFACTS / "playground-phone.png"), full_page=True)


def test_bad_image_shows_the_api_error(page, tmp_path: Path, data_dir: Path) -> None:
    text_file = tmp_path / "not-an-image.jpg"
    text_file.write_text("this is plain text, not a picture\n")
    page.set_input_files("#image-file", str(text_file))
    page.set_input_files("#video-file", str(data_dir / "halfbody_talk_3s.mp4"))

    with page.expect_response(lambda r: r.status >= 400) as rejected:
        page.click("#submit")
    error = rejected.value.json()["error"]
    assert rejected.value.status == 400
    page.locator("#error").wait_for(state="visible")
    assert page.inner_text("#error-message") == error["message"]
    assert page.inner_text("#error-code") == error["code"]
    assert page.get_attribute("#error", "role") == "alert"


def test_wrong_key_shows_the_api_error(page) -> None:
    page.fill("#api-key", "mk-not-a-real-key")
    with page.expect_response(lambda r: r.url.endswith("/v1/videos/generations")) as rejected:
        page.click("#submit")
    assert rejected.value.status == 401
    error = rejected.value.json()["error"]
    page.locator("#error").wait_for(state="visible")
    assert page.inner_text("#error-message") == error["message"]
    assert page.inner_text("#error-code") == error["code"]


def test_key_is_kept_in_the_browser(page, key: str) -> None:
    page.reload()
    assert page.input_value("#api-key") == key
    assert page.evaluate("localStorage.getItem('marionet.apiKey')") == key


def test_every_control_is_labelled_and_fits_a_phone(page) -> None:
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, textarea, select, button, progress')]
              .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                            && !el.textContent.trim())
              .map(el => el.id || el.outerHTML)"""
    )
    assert unlabelled == []
    assert page.get_attribute("#status", "aria-live") == "polite"

    page.set_viewport_size({"width": 360, "height": 740})
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow == 0
    boxes = [page.locator(sel).bounding_box() for sel in ("#image-source", "#video-source", "#result")]
    assert boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"], "phone layout should stack the cards"
    assert all(box["width"] <= 360 for box in boxes)


def test_keyboard_reaches_the_form(page) -> None:
    reached = set()
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.id || document.activeElement.name"))
    assert {"api-key", "image-file", "video-file", "prompt", "submit"} <= reached


@pytest.fixture
def media(data_dir: Path) -> Iterator[str]:
    """The shared media on their own loopback server, for inputs given by URL."""
    server = media_server(data_dir)
    yield server.url
    server.close()


def test_image_by_url_and_a_failed_task_shows_its_error(
    page, server: Server, key: str, media: str, data_dir: Path
) -> None:
    page.check("input[name=image-from][value=url]")
    assert page.is_hidden("#image-file")
    page.fill("#image-url", f"{media}/halfbody_ref_elf.jpg")
    page.press("#image-url", "Tab")
    page.wait_for_function("document.getElementById('image-preview').naturalWidth > 0")
    assert page.evaluate("document.getElementById('image-preview').naturalWidth") == 1280
    # MPEG-4 Part 2 with no person in it: Chromium cannot preview it, and the engine finds nobody.
    page.set_input_files("#video-file", str(data_dir / "skeleton_render_no_person.mp4"))
    page.locator("#video-empty", has_text="cannot preview").wait_for()

    with page.expect_response(lambda r: r.url.endswith("/v1/videos/generations")) as created:
        page.click("#submit")
    task_id = created.value.json()["id"]
    page.locator("#error").wait_for(state="visible", timeout=TASK_TIMEOUT_MS)

    with server.client(key) as api:
        task = api.get(f"/v1/tasks/{task_id}").json()
    assert task["status"] == "failed"
    assert page.inner_text("#error-message") == task["error"]["message"]
    assert page.inner_text("#error-code") == task["error"]["code"]
    assert page.is_hidden("#output")
    row = page.locator(f"#tasks-body tr[data-task-id='{task_id}']")
    row.locator(".badge.failed").wait_for()
    assert task["error"]["code"] in row.inner_text()


def test_cancel_button_stops_the_task(page, server: Server, key: str, data_dir: Path) -> None:
    page.set_input_files("#image-file", str(data_dir / "halfbody_ref_elf.jpg"))
    page.set_input_files("#video-file", str(data_dir / "halfbody_talk_3s.mp4"))
    with page.expect_response(lambda r: r.url.endswith("/v1/videos/generations")) as created:
        page.click("#submit")
    task_id = created.value.json()["id"]
    page.locator("#cancel").wait_for(state="visible")
    with page.expect_response(lambda r: r.url.endswith(f"/v1/tasks/{task_id}/cancel")) as cancelled:
        page.click("#cancel")
    assert cancelled.value.status == 200
    page.locator("#error").wait_for(state="visible", timeout=TASK_TIMEOUT_MS)
    assert page.inner_text("#error-code") == "task_cancelled"
    with server.client(key) as api:
        task = api.get(f"/v1/tasks/{task_id}").json()
    assert (task["status"], task["error"]["code"]) == ("failed", "task_cancelled")
    assert page.inner_text("#error-message") == task["error"]["message"]
    assert page.is_hidden("#cancel")
