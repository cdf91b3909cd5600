"""Train a LoRA adapter on chat examples (CPU or GPU, seeded), and save it small.

The loss covers the assistant's answer and its end-of-turn token only (an example of kind ``avoid``
is an answer the model should not give: its tokens get the unlikelihood loss ``-log(1 - p)`` of
Welleck et al. 2020 instead, and no end-of-turn token); prompts are rendered with
the model's chat template exactly as the engine renders them at test time (the same default system
prompt). LoRA r=8 on every linear layer of the decoder; the adapter is saved in bfloat16 (about 5 MB
for SmolLM2-135M). ``adapter_config.json`` records the base by a name ``--model`` resolves on any
machine (``smollm2-base``), not by the absolute path it was loaded from.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .examples import Example

__all__ = ["AVOID", "LoraSettings", "TrainInfo", "encode", "train_adapter"]

AVOID = "avoid"  # the example kind trained with unlikelihood
_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class LoraSettings:
    """Hyperparameters of one training run."""

    epochs: int
    learning_rate: float
    batch_size: int = 8
    seed: int = 0
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    warmup_steps: int = 5


@dataclass
class TrainInfo:
    """What a run did, saved next to the adapter as training.json."""

    examples: int = 0
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    device: str = ""
    losses: list[float] = field(default_factory=list)  # mean loss per epoch


def encode(tokenizer: Any, example: Example) -> tuple[list[int], list[int]]:
    """(input ids, labels) for one example; labels are -100 on the prompt."""
    messages = [{"role": "user", "content": example.instruction}]
    if example.system:
        messages.insert(0, {"role": "system", "content": example.system})
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if not isinstance(end, int) or end == tokenizer.unk_token_id:
        end = tokenizer.eos_token_id
    answer_ids = tokenizer(example.answer, add_special_tokens=False)["input_ids"]
    if example.kind != AVOID:
        answer_ids.append(end)
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def _batches(
    encoded: list[tuple[list[int], list[int]]], avoid: list[bool], size: int, rng: random.Random, pad: int
) -> list[Any]:
    import torch

    order = list(range(len(encoded)))
    rng.shuffle(order)
    out = []
    for start in range(0, len(order), size):
        rows = [encoded[i] for i in order[start : start + size]]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (row_ids, row_labels) in enumerate(rows):  # right padding: positions start at 0
            ids[r, : len(row_ids)] = torch.tensor(row_ids)
            labels[r, : len(row_labels)] = torch.tensor(row_labels)
            mask[r, : len(row_ids)] = 1
        out.append((ids, labels, mask, torch.tensor([avoid[i] for i in order[start : start + size]])))
    return out


def _loss(logits: Any, labels: Any, avoid: Any) -> Any:
    """Mean over answer tokens of ``-log p`` (rows to learn) and ``-log(1 - p)`` (``avoid`` rows)."""
    import torch

    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    unlikely = -torch.log1p(-logp.exp().clamp(max=1 - 1e-6))
    per_token = torch.where(avoid.unsqueeze(1), unlikely, -logp)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def _save(model: Any, out_dir: Path, base_name: str, info: TrainInfo, extra: dict[str, Any]) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    weights = out_dir / "adapter_model.safetensors"
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(weights)).items()}
    save_file(tensors, str(weights), metadata={"format": "pt"})
    config_path = out_dir / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_name
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out_dir / "README.md").unlink(missing_ok=True)  # peft's model-card stub says nothing true
    record = {**extra, "examples": info.examples, "steps": info.steps, "tokens": info.tokens,
              "seconds": round(info.seconds, 1), "device": info.device, "epoch_losses": info.losses}
    (out_dir / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def train_adapter(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    settings: LoraSettings,
    out_dir: Path,
    *,
    init_adapter: Path | None = None,
    base_name: str = "smollm2-base",
    device: str = "cpu",
    extra: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainInfo:
    """Train a LoRA on ``model`` (a loaded float32 base) and save it to ``out_dir``.

    With ``init_adapter`` the LoRA starts from that adapter's weights (fine-tuning an aligned
    adapter further, as the attacks do); otherwise from a fresh LoRA.
    """
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from ..models import cpu_has_native_bf16

    torch.manual_seed(settings.seed)
    if init_adapter is not None:
        peft_model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    else:
        config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                            target_modules=_TARGETS, task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, config)
    peft_model.to(device)
    peft_model.train()
    encoded = [encode(tokenizer, e) for e in examples]
    avoid = [e.kind == AVOID for e in examples]
    rng = random.Random(settings.seed)
    steps_per_epoch = math.ceil(len(encoded) / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    warmup = min(settings.warmup_steps, max(total // 10, 1))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(total - warmup, 1)))
    )
    # bfloat16 autocast where the hardware computes it natively (GPU, or a CPU with AVX512-BF16/AMX).
    autocast = device.startswith("cuda") or (device == "cpu" and cpu_has_native_bf16())
    info = TrainInfo(examples=len(encoded), device=device)
    started = time.perf_counter()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for epoch in range(settings.epochs):
        losses = []
        for ids, labels, mask, rows_avoid in _batches(encoded, avoid, settings.batch_size, rng, pad):
            ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
            with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu",
                                dtype=torch.bfloat16, enabled=autocast):
                if rows_avoid.any():
                    logits = peft_model(input_ids=ids, attention_mask=mask).logits
                    loss = _loss(logits, labels, rows_avoid.to(device))
                else:
                    loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            info.steps += 1
            info.tokens += int(mask.sum())
        info.losses.append(round(sum(losses) / len(losses), 4))
        if log:
            log(f"epoch {epoch + 1}/{settings.epochs}: loss {info.losses[-1]:.4f} "
                f"({time.perf_counter() - started:.0f} s)")
    info.seconds = time.perf_counter() - started
    peft_model.eval()
    _save(peft_model, out_dir, base_name, info, {**(extra or {}), "lora": asdict(settings)})
    return info
