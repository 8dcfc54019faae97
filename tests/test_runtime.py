"""The CPU runtime: the allocator fix that ``selfsup pretrain`` applies by itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import make_jpeg_folder

pytestmark = pytest.mark.slow  # real CLI processes

_CLI_PROBE = textwrap.dedent("""
    import json, sys
    from selfsup import runtime
    before = runtime.freed_memory_kept()
    from selfsup.cli.main import main
    code = main(sys.argv[1:])
    print(json.dumps({"before": before, "after": runtime.freed_memory_kept(), "code": code}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_cli_process_keeps_freed_memory(tmp_path):
    """``selfsup pretrain`` turns the allocator fix on by itself; SELFSUP_NO_MALLOPT=1 keeps it off."""
    data = make_jpeg_folder(tmp_path / "images", per_class=4)
    args = [
        "pretrain",
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(data),
        "--backbone",
        "resnet10",
        "--batch-size",
        "4",
        "--max-steps",
        "1",
        "--epochs",
        "1",
        "--no-progress",
        "--device",
        "cpu",
        "--set",
        "knn_every=0",
        "--set",
        "aug.image_size=16",
        "--set",
        f"cache_dir={tmp_path / 'c'}",
    ]
    results = {}
    for name, extra in (("default", {}), ("off", {"SELFSUP_NO_MALLOPT": "1"})):
        env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
        done = subprocess.run(
            [sys.executable, "-c", _CLI_PROBE, *args, "--out", str(tmp_path / name)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["default"] == {"before": False, "after": True, "code": 0}
    assert results["off"] == {"before": False, "after": False, "code": 0}
