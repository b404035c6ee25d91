"""The drawing page in headless Chromium: draw a digit with the mouse, see the prediction and the chart."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
SCREENSHOT = Path(__file__).resolve().parents[2] / "reports" / "drawing_page.png"

# Strokes in canvas pixels (the pad is 280x280): a seven, then a one.
SEVEN = [[(70, 60), (210, 60), (180, 120), (130, 230)]]
ONE = [[(140, 40), (140, 240)]]


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright (one browser for the module)."""
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if executable is None:
        pytest.fail("Chromium is missing: run `make browsers` (apt-get install chromium)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser):
    """A desktop-sized page, driven with the mouse."""
    context = browser.new_context(viewport={"width": 900, "height": 640})
    yield context.new_page()
    context.close()


PHONE = {
    "viewport": {"width": 420, "height": 800},
    "has_touch": True,
    "is_mobile": True,
    "device_scale_factor": 3,
}


@pytest.fixture
def phone(browser, gateway, request):
    """The drawing page on a touch screen: the page, the pad's box, and a DevTools session to touch it.

    PHONE's viewport unless a test asks for another (`indirect` parametrization: {"width": .., "height": ..}).
    """
    context = browser.new_context(**{**PHONE, "viewport": getattr(request, "param", PHONE["viewport"])})
    page = context.new_page()
    page.goto(gateway.url + "/")
    yield page, page.locator("#pad").bounding_box(), context.new_cdp_session(page)
    context.close()


def draw(page, strokes) -> None:
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        (x, y), rest = stroke[0], stroke[1:]
        page.mouse.move(box["x"] + x, box["y"] + y)
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=12)
        page.mouse.up()


def wait_for_answer(page) -> str:
    page.wait_for_selector('#chart[data-ready="true"]', timeout=15_000)
    return page.locator("#digit").inner_text()


def test_drawing_a_digit_shows_the_prediction_the_chart_and_the_model_input(page, gateway):
    page.goto(gateway.url + "/")
    assert page.locator("#digit").inner_text() == "?"
    draw(page, SEVEN)
    assert wait_for_answer(page) == "7"
    bars = page.locator("#chart .row")
    assert bars.count() == 10
    widths = [
        float(bars.nth(k).locator(".bar").evaluate("e => parseFloat(e.style.width)")) for k in range(10)
    ]
    assert abs(sum(widths) - 100) < 1.0  # the probabilities, as percentages
    assert widths.index(max(widths)) == 7
    assert "top" in (bars.nth(7).get_attribute("class") or "")
    assert "% sure" in page.locator("#confidence").inner_text()
    assert "model mnist v2" in page.locator("#meta").inner_text()
    seen_ink = page.evaluate(
        "() => Array.from(document.getElementById('seen').getContext('2d')"
        ".getImageData(0, 0, 28, 28).data).filter((v, i) => i % 4 === 0 && v > 128).length"
    )
    assert seen_ink > 20  # the preprocessed 28x28 digit is drawn
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_clear_then_redraw_gives_a_new_answer(page, gateway):
    page.goto(gateway.url + "/")
    draw(page, SEVEN)
    wait_for_answer(page)
    page.click("#clear")
    assert page.locator("#digit").inner_text() == "?"
    assert page.locator("#chart").get_attribute("data-ready") is None
    draw(page, ONE)
    assert wait_for_answer(page) == "1"


def test_drawing_with_a_finger_works_too(phone):
    """Real touch events (Chrome DevTools Input.dispatchTouchEvent) on a touch-screen page."""
    page, box, touch = phone
    path = [{"x": box["x"] + 140, "y": box["y"] + 40 + 10 * i} for i in range(21)]  # a one, top to bottom
    touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [path[0]]})
    for point in path[1:]:
        touch.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
    touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    assert wait_for_answer(page) == "1"
    assert ink_at(page, 140, 140)  # under the finger, on a 3x screen
    page.screenshot(path=str(SCREENSHOT.with_name("drawing_page_touch.png")), full_page=True)


def on_screen(page, x: float, y: float) -> dict:
    """Where the pad's canvas pixel (x, y) shows on the screen: the bitmap is scaled into its content box."""
    return page.evaluate(
        "([x, y]) => { const pad = document.getElementById('pad'), box = pad.getBoundingClientRect();"
        " const border = parseFloat(getComputedStyle(pad).borderLeftWidth), side = box.width - 2 * border;"
        " return {x: box.left + border + x * side / pad.width,"
        " y: box.top + border + y * side / pad.height}; }",
        [x, y],
    )


@pytest.mark.parametrize(
    "phone", [{"width": 320, "height": 640}, {"width": 280, "height": 653}], ids=["320px", "280px"],
    indirect=True,
)
def test_on_a_narrow_phone_the_pad_fits_and_ink_lands_under_the_finger(phone):
    """The pad shrinks to fit the screen (no sideways scrolling); strokes are scaled to its displayed size."""
    page, box, touch = phone
    width = page.viewport_size["width"]
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, box
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width  # nothing sticks out
    top, bottom = on_screen(page, 70, 60), on_screen(page, 70, 220)
    path = [{"x": top["x"], "y": top["y"] + (bottom["y"] - top["y"]) * i / 16} for i in range(17)]  # a one
    touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [path[0]]})
    for point in path[1:]:
        touch.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
    touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    assert wait_for_answer(page) == "1"
    assert all(ink_at(page, 70, y) for y in (60, 140, 220))  # from end to end under the finger
    assert not any(ink_at(page, x, y) for x, y in ((40, 140), (100, 140), (70, 30), (70, 250)))  # not beside
    page.screenshot(path=str(SCREENSHOT.with_name(f"drawing_page_{width}px.png")), full_page=True)


def test_predict_on_an_empty_pad_says_what_to_do(page, gateway):
    page.goto(gateway.url + "/")
    page.click("#predict")
    assert page.locator("#error").inner_text() == "Draw a digit first."


PREDICT = "**/v1/predict*"


def ink_at(page, x: int, y: int) -> bool:
    """Whether the pad's pixel at canvas coordinates (x, y) is darker than the paper."""
    pad = "document.getElementById('pad').getContext('2d')"
    return page.evaluate(f"() => {pad}.getImageData({x}, {y}, 1, 1).data[0]") < 128


@pytest.mark.parametrize(
    "status, content_type, body, words",
    [(503, "application/json", '{"error": "model server unavailable: test"}', "model server unavailable"),
     (502, "text/html", "<html>Bad Gateway</html>", "HTTP 502"),
     (200, "text/html", "<html>a proxy's login page</html>", "HTTP 200")],
    ids=["json error", "proxy error page", "html answered 200"],
)  # fmt: skip
def test_a_failed_prediction_shows_the_error_and_not_the_last_answer(
    page, gateway, status, content_type, body, words
):
    page.goto(gateway.url + "/")
    draw(page, SEVEN)
    assert wait_for_answer(page) == "7"
    page.route(PREDICT, lambda route: route.fulfill(status=status, content_type=content_type, body=body))
    try:
        draw(page, ONE)
        page.wait_for_selector("#error:not([hidden])", timeout=15_000)
    finally:
        page.unroute(PREDICT)
    assert words in page.locator("#error").inner_text()
    assert page.locator("#digit").inner_text() == "?"  # the 7 was the answer to another drawing
    assert page.locator("#chart").get_attribute("data-ready") is None


def test_an_answer_arriving_after_clear_is_dropped(page, gateway):
    page.goto(gateway.url + "/")
    page.evaluate(
        "() => { const fetch = window.fetch; window.replies = 0; window.fetch = (...args) =>"
        " new Promise((done) => setTimeout(done, 500)).then(() => fetch(...args))"
        ".then((reply) => { setTimeout(() => window.replies++, 300); return reply; }); }"
    )
    draw(page, SEVEN)
    page.click("#clear")
    page.wait_for_function("() => window.replies === 1", timeout=15_000)
    assert page.locator("#digit").inner_text() == "?"
    assert page.locator("#chart").get_attribute("data-ready") is None


def test_the_right_mouse_button_does_not_draw(page, gateway):
    page.goto(gateway.url + "/")
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 60, box["y"] + 60)
    page.mouse.down(button="right")
    page.mouse.move(box["x"] + 220, box["y"] + 220, steps=12)
    page.mouse.up(button="right")
    assert not ink_at(page, 140, 140)


def test_a_second_finger_does_not_draw(phone):
    """Only the first finger down draws; a second one (or a resting palm) is ignored until it lifts."""
    page, box, touch = phone
    palm = {"x": box["x"] + 40, "y": box["y"] + 250, "id": 2}
    path = [{"x": box["x"] + 140, "y": box["y"] + 40 + 10 * i, "id": 1} for i in range(21)]
    touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [path[0]]})
    touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [path[1], palm]})
    for k, point in enumerate(path[2:]):
        moved = dict(palm, x=palm["x"] + k % 2)
        touch.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point, moved]})
    touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    assert wait_for_answer(page) == "1"
    assert ink_at(page, 140, 140)
    assert not ink_at(page, 40, 250)  # where the second finger rested
    assert not ink_at(page, 90, 200)  # between the two fingers
