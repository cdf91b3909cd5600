"""Hidden states of the last prompt token at every layer: the input of the judge-free activation check.

Safety fine-tuning moves harmful instructions into their own cluster of activations, and jailbreaks
move them back toward the harmless one (Jain et al. 2024; the "refusal direction" of Arditi et al.
2024 is read at the same position). The last prompt token is where the model has read the whole
instruction and is about to answer, so its state is the one that decides between refusing and
complying. Forward passes only, no generation: one pass per batch gives every layer at once.

torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np

from .engine import HFEngine, plan_batches

__all__ = ["last_token_states", "prompt_states"]


@contextlib.contextmanager
def _left_padded(tokenizer: Any) -> Iterator[None]:
    """Left padding (and a pad token) while inside; the tokenizer is left as it was found.

    With left padding the last position of every row is its last real token, whatever the batch.
    """
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if pad is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield
    finally:
        tokenizer.padding_side = side
        if pad is None:
            tokenizer.pad_token = pad


def _batch_states(model: Any, tokenizer: Any, texts: list[str], device: str, special: bool) -> np.ndarray:
    """(len(texts), n_layers + 1, hidden) float32 states of the last token of each text."""
    import torch

    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=special).to(device)
    # Positions count real tokens only (as generate() does), so a row's padding never shifts them:
    # the last-token state must not depend on which other prompts share the batch.
    positions = (enc["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        out = model(**enc, position_ids=positions, output_hidden_states=True, use_cache=False)
    # hidden_states: n_layers + 1 tensors of (batch, tokens, hidden); index 0 is the embeddings.
    last = torch.stack([h[:, -1, :] for h in out.hidden_states], dim=1)
    return last.float().cpu().numpy()


def last_token_states(
    model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32, device: str = "cpu"
) -> np.ndarray:
    """The hidden state of the last token of each text at every layer, in the order of ``texts``.

    ``texts`` are rendered prompts (chat template already applied, e.g. by ``HFEngine.render``).
    Returns a float32 array of shape (len(texts), n_layers + 1, hidden); [:, 0] is the embeddings.
    ``model`` may be a plain transformers model or a PEFT-wrapped one.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("last_token_states needs at least one text")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    # Chat templates already carry their special tokens; do not let the tokenizer add a second BOS.
    special = not getattr(tokenizer, "chat_template", None)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]]
    results: list[np.ndarray | None] = [None] * len(texts)
    with _left_padded(tokenizer):
        # Length-sorted batches waste little compute on padding; order is restored below.
        for batch in plan_batches(lengths, batch_size):
            states = _batch_states(model, tokenizer, [texts[i] for i in batch], device, special)
            for i, row in zip(batch, states):
                results[i] = row
    return np.stack([r for r in results if r is not None])


def prompt_states(
    model: Any,
    tokenizer: Any,
    instructions: Sequence[str],
    system_prompt: str | None = None,
    device: str = "cpu",
    batch_size: int = 32,
) -> np.ndarray:
    """``last_token_states`` of ``instructions`` rendered the way the suite renders them."""
    engine = HFEngine(model, tokenizer, device)
    texts = [engine.render(instruction, system_prompt) for instruction in instructions]
    return last_token_states(model, tokenizer, texts, batch_size=batch_size, device=device)
