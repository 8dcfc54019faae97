"""The comparison report renders in a real browser: headless Chromium loads report.html, the table rows
are there and every embedded plot decodes (naturalWidth > 0); a screenshot is not blank.

The report is built from synthetic run folders (no training), written in the formats the engine and
the evaluation write, so this test takes seconds. A corrupted image is the negative control: it
proves the in-page check can fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from selfsup.compare.plan import SUPERVISED, plan_runs, spec_config
from selfsup.compare.report import write_report
from selfsup.compare.results import load_result

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Chromium not installed (apt-get install chromium; `make test` does)"
)

pytestmark = pytest.mark.slow  # a real browser / a real CLI process

CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var images = Array.from(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var marker = document.createElement('div');
  marker.id = 'selfsup-check';
  marker.textContent = 'images=' + images.length + ' loaded=' + loaded +
      ' rows=' + document.querySelectorAll('table tbody tr').length +
      ' tables=' + document.querySelectorAll('table').length;
  document.body.appendChild(marker);
});
</script>"""


def fake_run(run_dir: Path, cfg, rng: np.random.Generator, accuracy: float) -> None:
    """Write the files a trained and evaluated run has, with plausible numbers."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict()))
    rows = [
        {"step": s, "epoch": s / 10, "loss": 5.0 - s / 20 + 0.1 * rng.random(), "lr": 0.1, "images_per_s": 300.0}
        for s in range(1, 41)
    ]
    for epoch in (1, 2, 3, 4):
        rows[epoch * 10 - 1]["knn_top1"] = accuracy - 0.1 + 0.025 * epoch
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "summary.json").write_text(
        json.dumps(
            {
                "steps": 40,
                "epochs": 4.0,
                "wall_time_s": 512.0,
                "images_per_s": 310.5,
                "peak_rss_mib": 2048.0,
                "device": "cpu",
                "finished": True,
            }
        )
    )
    (run_dir / "eval.json").write_text(
        json.dumps(
            {
                "method": cfg.method,
                "dataset": "fashion-mnist",
                "backbone": cfg.backbone,
                "image_size": 32,
                "train_images": 60000,
                "test_images": 10000,
                "knn_top1_h": accuracy,
                "knn_top1_z": accuracy - 0.05,
                "linear_top1_h": accuracy + 0.02,
                "linear_top1_z": accuracy - 0.04,
                "effective_rank_z": 40.5,
                "embedding_std_z": 0.07,
                "raw_pixels_knn_top1": 0.81,
                "raw_pixels_linear_top1": 0.83,
                "standardized_pixels_knn_top1": 0.82,
                "random_init_knn_top1": 0.7,
                "random_init_linear_top1": 0.76,
            }
        )
    )
    (run_dir / "compare.json").write_text(json.dumps({"state": "finished", "classifier_top1": 0.9}))
    labels = rng.integers(0, 10, 500)
    centres = rng.normal(size=(10, 2)) * 3
    with open(run_dir / "eval_embeddings.npz", "wb") as handle:
        np.savez(
            handle,
            labels=labels,
            classes=np.array([f"class {i}" for i in range(10)]),
            h_pca2=(centres[labels] + rng.normal(size=(500, 2))).astype(np.float32),
            z_pca2=rng.normal(size=(500, 2)).astype(np.float32),
            h_singular=np.sort(rng.random(64))[::-1].astype(np.float32),
            z_singular=np.geomspace(1, 1e-4, 32).astype(np.float32),
        )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compare")
    plan = plan_runs(["simclr", "vicreg"], ["variance"], "cpu", {}, {}, [0])
    rng = np.random.default_rng(0)
    for i, spec in enumerate(plan.all_runs()):
        classes = 10 if spec.method == SUPERVISED else None
        fake_run(out / spec.name, spec_config(spec, "cpu", {}, {}, num_classes=classes), rng, 0.8 + 0.01 * i)
    results = [load_result(spec, out / spec.name) for spec in plan.all_runs()]
    opts = SimpleNamespace(dataset="fashion-mnist", preset="cpu", command="selfsup compare ...", isolate=True)
    write_report(plan, results, opts, out)
    return out / "report.html"


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp / 'profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def checked_dom(html: str, tmp: Path) -> str:
    page = tmp / "check.html"
    page.write_text(html.replace("</body>", CHECK_SCRIPT + "</body>"))
    result = chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri(), tmp=tmp)
    match = re.search(r'id="selfsup-check">([^<]*)<', result.stdout)
    assert match, f"no marker in the DOM; chromium said: {result.stderr[-2000:]}"
    return match.group(1)


def test_report_html_is_self_contained(report):
    html = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:|//|file:)""", html)
    assert "<link" not in html and "<script" not in html
    assert html.count('src="data:image/png;base64,') == 5  # loss, spectra, PCA map, ablation; + kNN curves


@needs_chromium
def test_chromium_renders_the_table_and_every_plot(report, tmp_path):
    marker = checked_dom(report.read_text(), tmp_path)
    numbers = dict(item.split("=") for item in marker.split())
    # results: simclr, vicreg, supervised + 3 baseline rows; variance ablation: 2 arms
    assert numbers == {"images": "5", "loaded": "5", "rows": "8", "tables": "2"}


@needs_chromium
def test_the_in_page_check_detects_a_broken_plot(report, tmp_path):
    html = report.read_text()
    start = html.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken = html[:start] + "AAAA" + html[start + 4 :]  # corrupt the PNG signature of the first plot
    numbers = dict(item.split("=") for item in checked_dom(broken, tmp_path).split())
    assert numbers["images"] == "5" and numbers["loaded"] == "4"


@needs_chromium
def test_screenshot_is_not_blank(report, tmp_path):
    shot = tmp_path / "shot.png"
    chromium("--window-size=1280,2400", f"--screenshot={shot}", report.as_uri(), tmp=tmp_path)
    assert shot.is_file(), "chromium wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (2400, 1280)
    dark = (pixels < 128).mean()
    assert 0.005 < dark < 0.5, dark  # text, table lines and plots on a white page
    assert pixels.std() > 20
