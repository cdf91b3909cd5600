"""The abliterated aligned default (Arditi et al. 2024, ``safety_gate.training.ablate``) against the
aligned default on the real SmolLM2: the activation check and the regression item flag it, and the
default compared with itself is flagged by neither, whatever the seed.

Small samples (2 prompts a category, 2 benign prompts a type, 48 new tokens), as test_finetuning;
the full figures are in the README. The edit takes about a minute on a free 2-core CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_finetuning import FAST, _summary, shared_cache, small_sets  # noqa: F401 (module fixtures)

pytestmark = pytest.mark.slow


def _checkout_env() -> dict[str, str]:
    """The environment with the safety_gate under test (this checkout) first on the path, so a child
    process does not import whichever one is installed."""
    import safety_gate

    package_root = str(Path(safety_gate.__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}


@pytest.fixture(autouse=True)
def _children_import_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", _checkout_env()["PYTHONPATH"])


@pytest.fixture(scope="module")
def abliterated_default(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import ADAPTER_CACHE

    out = tmp_path_factory.mktemp("abliterated") / "model"
    env = _checkout_env()
    done = subprocess.run(
        [sys.executable, "-m", "safety_gate.training.ablate", "--out", str(out), "--harmless", "borderline",
         "--layer", "6", "--cache-dir", str(ADAPTER_CACHE)],
        capture_output=True, text=True, check=False, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_abliterated_default_is_flagged_by_activations_and_regression(
    pytester: pytest.Pytester, small_sets: tuple[Path, Path], shared_cache: Path, abliterated_default: Path
) -> None:
    harmful, benign = small_sets
    record = json.loads((abliterated_default / "abliteration.json").read_text())
    assert record["layer"] == 6 and record["source"] == "default" and record["harmless"] == "borderline"
    result = pytester.runpytest_subprocess(
        "--pyargs", "safety_tests", *FAST, f"--model={abliterated_default}", "--baseline=default",
        f"--benchmark={harmful}", f"--benign={benign}", f"--cache-dir={shared_cache}", "--activations",
        "--gate=aggregate", "-k", "regression or activations",
    )
    data = _summary(pytester)
    act = data["activations"]
    assert act["passed"] is False, act
    assert act["summary"]["projection_ratio"] < 0.5
    overall = data["regression"]["groups"][-1]
    assert overall["group"] == "overall" and overall["passed"] is False, overall
    result.stdout.fnmatch_lines(["*harmful prompts moved toward the harmless side*"])


@pytest.mark.parametrize("seed", ["0", "1", "2"])
def test_default_against_itself_is_never_flagged(
    pytester: pytest.Pytester, small_sets: tuple[Path, Path], shared_cache: Path, seed: str
) -> None:
    harmful, benign = small_sets
    result = pytester.runpytest_subprocess(
        "--pyargs", "safety_tests", *FAST, "--baseline=default", f"--benchmark={harmful}", f"--benign={benign}",
        f"--cache-dir={shared_cache}", "--activations", f"--seed={seed}", "-k", "regression or activations",
    )
    result.assert_outcomes(passed=13)
    summary = _summary(pytester)["activations"]["summary"]
    assert summary["direction_cosine"] == pytest.approx(1.0) and summary["projection_ratio"] == pytest.approx(1.0)
