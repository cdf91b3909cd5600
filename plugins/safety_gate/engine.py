"""Batched generation with a local transformers model.

All selected prompts are generated in one pass: rendered with the chat template, sorted by token
length (longest first, so the first batch finds an out-of-memory early), cut into batches,
left-padded, generated greedily, and put back in their original order. Each finished batch is
handed to ``on_batch`` at once so the caller can persist it: an interrupted run loses at most one
batch. On CUDA out-of-memory a batch is halved and retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

__all__ = ["Answer", "HFEngine", "auto_batch_size", "plan_batches"]

# Measured on the 2-core CPU (bench/cpu_suite.py, 128 new tokens). The bare SmolLM2, which rarely
# stops early (330 prompts): float32 22 tokens/s at batch 1, 240 at 64, 257 at two batches of 165;
# bfloat16 29 at batch 1, 421 at 64, 582 at 165. The aligned default with the benign set (547
# prompts; short refusals end early, and a batch runs until its longest answer ends): batches of
# 92 took 155 s of generation at 6.0 GB peak, of 183 168 s at 10.9 GB, of 274 166 s at 16.3 GB,
# one of 547 528 s. So the cap is 96: as fast or faster, and laptop-sized memory.
_CPU_BATCH = 96
_CUDA_BATCH = 128


@dataclass(frozen=True)
class Answer:
    """A generated answer: its text, how many new tokens it took, and why it stopped."""

    text: str
    n_tokens: int
    finish: str  # "stop" (end-of-sequence token) or "length" (max_new_tokens reached)


def auto_batch_size(device: str) -> int:
    """The batch size used when ``--batch-size`` is auto."""
    return _CUDA_BATCH if device.startswith("cuda") else _CPU_BATCH


def plan_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size``, longest prompts first (stable).

    Batches are balanced (330 prompts at 64 give six of 55, not five of 64 and one of 10): a small
    last batch costs nearly as many decoding steps as a full one.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if not order:
        return []
    n_batches = -(-len(order) // batch_size)
    size = -(-len(order) // n_batches)
    return [order[i : i + size] for i in range(0, len(order), size)]


class HFEngine:
    """Greedy batched generation with a loaded transformers model and tokenizer."""

    def __init__(self, model: Any, tokenizer: Any, device: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.batch_sizes: list[int] = []  # of the batches generated, in order

    def render(self, instruction: str, system_prompt: str | None) -> str:
        """The prompt text: the chat template applied where the tokenizer has one."""
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": instruction}]
            if system_prompt:
                messages.insert(0, {"role": "system", "content": system_prompt})
            return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return f"{system_prompt}\n\n{instruction}\n" if system_prompt else f"{instruction}\n"

    def _stop_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = ids if isinstance(ids, list) else [ids]
        return {i for i in [*ids, getattr(self.tokenizer, "eos_token_id", None)] if i is not None}

    def _generate_batch(
        self, texts: list[str], max_new_tokens: int, on_step: Callable[[int], None] | None
    ) -> list[Answer]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Progress(StoppingCriteria):  # called once a decoding step; never stops anything
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                if on_step is not None:
                    on_step(input_ids.shape[0])
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        # Chat templates already carry their special tokens; do not let the tokenizer add a second BOS.
        special = not getattr(self.tokenizer, "chat_template", None)
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=special).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([_Progress()]),
            )
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        stops = self._stop_ids()
        answers = []
        for row in new:
            cut = next((i for i, tok in enumerate(row) if tok in stops), None)
            tokens = row if cut is None else row[:cut]
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            answers.append(Answer(text, len(tokens), "length" if cut is None else "stop"))
        return answers

    def _plan(self, lengths: Sequence[int], max_new_tokens: int, batch_size: int | None) -> list[list[int]]:
        """Prompt indices in batches (``batch_size`` None: the device's automatic size)."""
        return plan_batches(lengths, batch_size or auto_batch_size(self.device))

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        batch_size: int | None,
        on_batch: Callable[[list[int], list[Answer]], None],
        on_step: Callable[[int], None] | None = None,
    ) -> list[Answer]:
        """Answers to ``prompts`` in their order; ``on_batch(indices, answers)`` after each batch,
        ``on_step(n_sequences)`` after each decoding step (for a progress bar)."""
        import torch

        lengths = [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        results: list[Answer | None] = [None] * len(prompts)
        pending = self._plan(lengths, max_new_tokens, batch_size)
        while pending:
            batch = pending.pop(0)
            try:
                answers = self._generate_batch([prompts[i] for i in batch], max_new_tokens, on_step)
            except torch.OutOfMemoryError:
                if len(batch) == 1:
                    raise
                torch.cuda.empty_cache()
                half = len(batch) // 2
                pending[:0] = [batch[:half], batch[half:]]
                continue
            self.batch_sizes.append(len(batch))
            for i, answer in zip(batch, answers):
                results[i] = answer
            on_batch(batch, answers)
        return [a for a in results if a is not None]
