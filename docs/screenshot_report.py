"""Takes the README's picture of a report: a headless chromium screenshot of the
top of an ``index.html``.

Example (after ``make demo``):
    python docs/screenshot_report.py demo_output/base_logdir/*/report/index.html \
        docs/images/evaluation_report.png
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    page, out = Path(argv[0]), Path(argv[1])
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which('chromium') or 'chromium'
    for flag in ('--headless=new', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                 '--window-size=1280,1100'):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which('chromedriver')), options=options)
    try:
        driver.get(page.resolve().as_uri())
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
