"""benchmarks/gpu_check.sh's dry run: every step of the GPU check at a tiny size on the CPU, ending in records that
benchmarks/records.yaml would take (its fields, its table, a machine the file describes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "docs" / "hooks"))
import records as records_hook  # noqa: E402


def test_the_gpu_checks_dry_run_passes_and_writes_records(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, "MEDBOOST_DATA": str(tmp_path / "none")})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "gpu_check: all steps passed" in done.stdout
    data = yaml.safe_load((out / "gpu_records.yaml").read_text(encoding="utf-8"))
    known = records_hook.load()
    (machine,) = data["machines"]
    what = [r["command"].split()[:2] for r in data["records"]]
    assert what == [["pytest", "-m"], ["medboost", "bench"], ["medboost", "train"]]
    for record in data["records"]:
        assert all(record.get(f) for f in records_hook.FIELDS), record
        assert record["table"] in known["tables"] and record["machine"] == machine
    assert "4 tests collected" in data["records"][0]["figure"]
    assert "% of" in data["records"][2]["figure"] and "startup" in data["records"][2]["figure"]
