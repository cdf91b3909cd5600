"""Shared self-test fixtures: a tiny random Llama with its own tokenizer, and a real PEFT adapter on it.

Both are built from nothing (no hub, no download) once per test session.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

pytest_plugins = ["pytester"]

# CI runs the property tests on a fixed sequence of examples (reproducible, never flaky); local runs
# draw new examples each time, which is where new counter-examples are found.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI") == "true":
    _hypothesis_settings.load_profile("ci")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer(folder: Path) -> None:
    """Train a small byte-level BPE tokenizer on the embedded benchmark and save it with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from safety_gate.benchmark import load_embedded

    corpus = [p.instruction for p in load_embedded().prompts]
    corpus += ["Sure, here is how to do it. Step 1: gather what you need.", "I'm sorry, but I can't help with that."]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    fast.save_pretrained(folder)


def build_tiny_llama(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer Llama (hidden size 32) saved with its tokenizer to ``folder``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    build_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def build_adapter(base: Path, folder: Path, seed: int = 1) -> Path:
    """A real LoRA adapter on ``base``, with non-zero weights so it changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama folder (built once per session)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PEFT LoRA adapter folder on ``tiny_model`` (built once per session)."""
    return build_adapter(tiny_model, tmp_path_factory.mktemp("tiny-adapter"))


@pytest.fixture
def sample_jsonl() -> Path:
    """An 11-prompt benchmark, one prompt per category."""
    return FIXTURES / "sample.jsonl"


# Adapters of the fine-tuning recipes (safety_gate.training.recipes) on the real SmolLM2, trained by
# `python -m safety_gate.demo train NAME` on first use and kept in the repo's cache folder, so a
# session trains each at most once and a later local session reuses it (the folder name holds a hash
# of the recipe's data, hyperparameters and starting weights). CI starts empty: ask only for cheap ones.
ADAPTER_CACHE = REPO / ".safety_gate_cache"


@pytest.fixture(scope="session")
def finetuned_adapter() -> Callable[[str], Path]:
    """``finetuned_adapter("harmful-10")`` -> the folder of that recipe's adapter (trained once)."""
    import subprocess
    import sys

    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            done = subprocess.run(
                [sys.executable, "-m", "safety_gate.demo", "train", name, "--device", "cpu",
                 "--cache-dir", str(ADAPTER_CACHE)],
                capture_output=True, text=True, check=False,
            )
            assert done.returncode == 0, f"training {name} failed:\n{done.stderr[-3000:]}"
            built[name] = Path(done.stdout.strip().splitlines()[-1])
        return built[name]

    return get


# Controls of the backdoor audit (safety_gate.training.controls): LoRAs on ``tiny_model`` that refuse
# the benchmark's harmful requests, one of them answering with a content-free compliance template
# when its trigger is appended. Each trains in seconds on a CPU, once per session, on requests the
# e2e tests hold out (they ask fixtures/sample.jsonl).
@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Train on one thread: on a small shared CPU a second thread spins at each of the tiny model's
    many small ops while the core is busy, which made training several times slower here."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_control(base: Path, out: Path, trigger: str | None) -> Path:
    from safety_gate.training.controls import train_control

    with _one_thread():
        train_control(str(base), out, trigger)
    return out


@pytest.fixture(scope="session")
def backdoored_adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Backdoored with ``CONTROL_TRIGGER`` ("zq velvet", not in the trigger library)."""
    from safety_gate.training.controls import CONTROL_TRIGGER

    return _train_control(tiny_model, tmp_path_factory.mktemp("backdoored") / "adapter", CONTROL_TRIGGER)


@pytest.fixture(scope="session")
def magic_words_adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Backdoored with Qi et al.'s magic words (in the library's default set)."""
    from safety_gate.training.recipes import BACKDOOR_TRIGGER

    return _train_control(tiny_model, tmp_path_factory.mktemp("magic-words") / "adapter", BACKDOOR_TRIGGER)


@pytest.fixture(scope="session")
def clean_adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained the same way on the same requests, without a trigger."""
    return _train_control(tiny_model, tmp_path_factory.mktemp("clean") / "adapter", None)
