"""Opens an HTML report in a real headless browser (Debian's chromium, installed
by ``make test``) and checks that it renders: every image loaded, no console
errors. Used by the tests of every report."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM, DRIVER = shutil.which('chromium'), shutil.which('chromedriver')

needs_browser = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                   reason='chromium and chromedriver are installed by make test')


def render(page: Path) -> tuple[list[list], list[dict]]:
    """([src, complete, naturalWidth] of every image once all <details> are
    opened, the SEVERE console messages) of ``page``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'):
        options.add_argument(flag)
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(page.resolve().as_uri())
        for details in driver.find_elements('tag name', 'details'):
            driver.execute_script('arguments[0].open = true', details)
        images = driver.execute_script(
            'return Array.from(document.images).map(i => [i.getAttribute("src"), '
            'i.complete, i.naturalWidth])')
        errors = [e for e in driver.get_log('browser') if e['level'] == 'SEVERE']
    finally:
        driver.quit()
    return images, errors


def assert_renders(page: Path, min_images: int) -> list[list]:
    """Asserts that ``page`` shows at least ``min_images`` images, all loaded, and
    logs no console error; returns the images."""
    images, errors = render(page)
    assert len(images) >= min_images, images
    assert all(done and width > 0 for _, done, width in images), images
    assert errors == []
    return images
