"""What `pip install .` users get: the wheel carries the package data, the suite and the entry point."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_ships_data_templates_suite_and_entry_point(tmp_path: Path) -> None:
    # No build isolation: the build must not reach the network; setuptools comes from the environment.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, text=True,
    )
    wheel = next(tmp_path.glob("pytest_safety_gate-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
        benchmark = archive.read("safety_gate/data/benchmark.jsonl").decode()
    for name in ["safety_gate/plugin.py", "safety_gate/data/embed_judge.npz", "safety_gate/data/embed_judge.json", "safety_gate/judges/rules.py", "safety_gate/report/templates/report.html.j2",
                 "safety_gate/data/benign.jsonl", "safety_gate/data/train/harmful.jsonl",
                 "safety_gate/data/train/helpful.jsonl", "safety_gate/data/train/borderline.jsonl",
                 "safety_gate/data/aligned/adapter_config.json", "safety_gate/data/aligned/adapter_model.safetensors",
                 "safety_gate/data/aligned/training.json", "safety_gate/training/lora.py", "safety_gate/demo.py",
                 "safety_tests/__init__.py", "safety_tests/test_safety.py"]:
        assert name in names
    assert len(benchmark.splitlines()) == 330
    assert "[pytest11]" in entry_points and "safety_gate.plugin = safety_gate.plugin" in entry_points
    assert not any(n.startswith(("tests/", "fixtures/", "bench/")) for n in names)
