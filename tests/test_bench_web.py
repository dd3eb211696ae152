"""`recon bench run` end to end on a tiny dataset, its row on the leaderboard web page, and the page itself in a
real headless browser (Debian's chromium + chromedriver): it loads, shows the database rows, sorting works.

The browser tests skip (saying why) only when chromium or chromedriver is missing; install them with
``apt-get install -y chromium chromium-driver``.
"""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from bench_helpers import CHROMIUM, chromium_dom

from recon.bench.dataset import load_benchmark, make_dataset
from recon.bench.leaderboard import Leaderboard, submit

CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> dict:
    """A dataset with one dev scene, a `recon bench run` result submitted, and two hand-made submissions."""
    from recon.bench.runner import run_benchmark

    root = tmp_path_factory.mktemp("web")
    data = make_dataset(root / "data", n_dev=1, n_test=0, width=64, height=48)
    db = root / "lb.sqlite"
    results = run_benchmark(
        data, "gaussians", 1, "dev", root / "run", iterations=30, db=db, submission_name="bench-run"
    )
    bench = load_benchmark(data)
    for method, offset in (("zeta-offset", 30), ("alpha-offset", 4)):
        sub = root / method
        for scene in bench.scenes["dev"]:
            (sub / scene).mkdir(parents=True)
            for v in bench.test_views(scene):
                img = cv2.imread(str(v.image)).astype(np.int32) + offset
                cv2.imwrite(str(sub / scene / v.name), np.clip(img, 0, 255).astype(np.uint8))
        submit(db, data, sub, method, track=1, name=method)
    from apps.leaderboard_web import make_server

    server = make_server(db, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {
        "db": db,
        "url": f"http://127.0.0.1:{server.server_port}",
        "results": results,
        "run": root / "run",
        "scene": bench.scenes["dev"][0],
        "root": root,
    }
    server.shutdown()
    server.server_close()


def _get(url: str) -> tuple[int, bytes, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read(), r.headers.get("Content-Type", "")


def test_bench_run_writes_results_json_and_submits(board: dict) -> None:
    res = json.loads((board["run"] / "results.json").read_text())
    assert res["method_name"] == "gaussians" and res["track"] == 1 and res["split"] == "dev"
    for key in ("psnr_m", "psnr", "ssim_m", "ssim", "psnr_m_std", "ssim_std", "fps"):
        assert isinstance(res["results"][key], float), key
    assert res["results"]["lpips"] is None and "LPIPS not computed" in res["lpips"]
    assert 5 < res["results"]["psnr_m"] < 60
    assert res["timings"]["total_s"] > 0 and board["scene"] in res["timings"]["per_scene"]
    pngs = sorted((board["run"] / "submission" / board["scene"]).iterdir())
    assert len(pngs) == 10 and cv2.imread(str(pngs[0])).shape == (48, 64, 3)
    row = next(r for r in Leaderboard(board["db"]).rows() if r["name"] == "bench-run")
    assert row["id"] == res["submission_id"] and row["psnr_m"] == pytest.approx(res["results"]["psnr_m"])


def test_pages_and_thumbnails_over_http(board: dict) -> None:
    status, body, _ = _get(board["url"] + "/")
    page = body.decode()
    assert status == 200 and "bench-run" in page and "alpha-offset" in page and "zeta-offset" in page
    rows = Leaderboard(board["db"]).rows()
    shown = sorted(rows, key=lambda r: page.index(f">{r['name']}</a>"))
    assert [r["name"] for r in shown] == [r["name"] for r in rows]  # served in rank order
    assert [r["psnr_m"] for r in rows] == sorted((r["psnr_m"] for r in rows), reverse=True)
    sid = rows[0]["id"]
    status, body, _ = _get(f"{board['url']}/submission/{sid}?scene={board['scene']}")
    assert status == 200 and body.count(b"render.png") == 10 and b"gt.png" not in body
    view = Leaderboard(board["db"]).image_rows(sid)[0]["view"]
    status, body, ctype = _get(f"{board['url']}/thumb/{sid}/{board['scene']}/{view}/render.png")
    assert status == 200 and ctype == "image/png" and body.startswith(b"\x89PNG")
    with pytest.raises(urllib.error.HTTPError) as exc:  # the hidden ground truth is never served
        _get(f"{board['url']}/thumb/{sid}/{board['scene']}/{view}/gt.png")
    assert exc.value.code == 404
    with pytest.raises(urllib.error.HTTPError):
        _get(board["url"] + "/submission/999")


@needs_chromium
def test_page_loads_in_headless_chromium_with_all_rows(board: dict, tmp_path: Path) -> None:
    dom = chromium_dom(board["url"] + "/", tmp_path / "profile")
    assert 'id="track1-dev"' in dom
    names = {r["name"] for r in Leaderboard(board["db"]).rows()}
    assert len(names) == 3
    for name in names:
        assert f">{name}</a>" in dom
    assert dom.count("<tr data-id=") == 3


@needs_chromium
@pytest.mark.skipif(CHROMEDRIVER is None, reason="chromedriver not installed (apt-get install -y chromium-driver)")
def test_clicking_a_column_header_sorts_the_table(board: dict, tmp_path: Path) -> None:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        driver.get(board["url"] + "/")
        table = driver.find_element(By.ID, "track1-dev")

        def column(key: str) -> list[str]:
            heads = table.find_elements(By.CSS_SELECTOR, "thead th")
            idx = [h.get_attribute("data-key") for h in heads].index(key)
            rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
            return [r.find_elements(By.TAG_NAME, "td")[idx].text for r in rows]

        def click(key: str) -> None:
            table.find_element(By.CSS_SELECTOR, f'th[data-key="{key}"]').click()

        psnr = [float(x) for x in column("psnr_m")]
        assert psnr == sorted(psnr, reverse=True)  # served ranked by PSNR-M
        click("psnr_m")
        asc = [float(x) for x in column("psnr_m")]
        assert asc == sorted(psnr) and asc != psnr
        assert table.get_attribute("data-sorted-by") == "psnr_m:asc"
        click("psnr_m")
        assert [float(x) for x in column("psnr_m")] == sorted(psnr, reverse=True)
        click("method")
        assert column("method") == sorted(column("method")) == ["alpha-offset", "gaussians", "zeta-offset"]
        # Drill-down: the submission link leads to per-scene scores and thumbnails.
        table.find_element(By.LINK_TEXT, "bench-run").click()
        driver.find_element(By.CSS_SELECTOR, "#scenes a").click()
        imgs = driver.find_elements(By.CSS_SELECTOR, "#views img")
        assert len(imgs) == 10  # renders only: no ground truth
        assert all(driver.execute_script("return arguments[0].naturalWidth", i) > 0 for i in imgs[:2])
    finally:
        driver.quit()
