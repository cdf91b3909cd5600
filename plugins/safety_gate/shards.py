"""Data-parallel generation: one process per GPU, each with its own copy of the model and a shard
of the prompts.

The parent loads no model. Prompts are dealt longest first, round robin, so every shard gets the
same mix of lengths (and so about the same work). Each worker streams its finished batches back
through a queue; the parent hands them to ``on_batch`` (which stores them in the one cache and
moves the one progress bar), so answers from every GPU land as they are made and a failure on one
GPU loses nothing the others finished.
"""

from __future__ import annotations

import queue as queue_module
from typing import Any, Callable, Sequence

from .engine import Answer

__all__ = ["ShardError", "ShardedEngine", "deal", "devices_for", "generate_sharded"]

_POLL_SECONDS = 2.0


class ShardError(RuntimeError):
    """A worker process failed; the message names its device and why."""


def deal(lengths: Sequence[int], shards: int) -> list[list[int]]:
    """Indices dealt longest first, round robin, into ``shards`` lists (fewer when there are fewer prompts)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    dealt = [order[k::shards] for k in range(shards)]
    return [d for d in dealt if d]


def devices_for(device: str, gpus: int) -> list[str]:
    """One device a worker: ``cuda:0`` .. ``cuda:N-1`` (checked against what torch sees), or N CPU workers."""
    if not device.startswith("cuda"):
        return ["cpu"] * gpus
    import torch

    seen = torch.cuda.device_count()
    if gpus > seen:
        raise ShardError(f"--gpus {gpus}: torch sees {seen} CUDA GPU{'s' if seen != 1 else ''} on this machine")
    return [f"cuda:{k}" for k in range(gpus)]


def _worker(spec: Any, settings: Any, prompts: list[tuple[str, str | None]], device: str, shard: int, out: Any) -> None:
    """Load the model on ``device``, answer ``prompts``, send ("batch", shard, (indices, answers))
    per batch, then ("done", shard, batch sizes), or ("error", shard, message)."""
    try:
        import torch

        from .engine import HFEngine
        from .models import load_model
        from .static_engine import choose_engine

        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        convert_root = settings.cache_dir / "models" if settings.cache_dir else None
        model, tokenizer = load_model(spec, device, settings.dtype, convert_root)
        engine = HFEngine(model, tokenizer, device) if settings.engine == "hf" else choose_engine(model, tokenizer, device)
        torch.manual_seed(settings.seed)
        texts = [engine.render(instruction, system) for instruction, system in prompts]
        engine.generate(texts, settings.max_new_tokens, settings.batch_size,
                        lambda idx, answers: out.put(("batch", shard, (idx, answers))))
        out.put(("done", shard, engine.batch_sizes))
    except BaseException as exc:  # reported to the parent, which raises it with the device named
        out.put(("error", shard, f"{type(exc).__name__}: {exc}"))


def generate_sharded(
    spec: Any, settings: Any, prompts: Sequence[tuple[str, str | None]], lengths: Sequence[int], devices: list[str],
    on_batch: Callable[[list[int], list[Answer]], None],
) -> list[int]:
    """Answer ``prompts`` ((instruction, system prompt) pairs; ``lengths`` to balance the shards)
    on ``devices``, one worker process each; ``on_batch(indices, answers)`` in the parent as
    batches arrive. Returns the batch sizes used. Raises :class:`ShardError` after the other
    workers finished when one failed."""
    import multiprocessing

    from .models import prepare

    prepare(spec, settings.cache_dir / "models" if settings.cache_dir else None)  # convert once, not per worker
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    out = ctx.Queue()
    shards = deal(lengths, len(devices))
    workers = [
        ctx.Process(target=_worker, args=(spec, settings, [prompts[i] for i in shard], device, k, out), daemon=True)
        for k, (device, shard) in enumerate(zip(devices, shards))
    ]
    for w in workers:
        w.start()
    running, errors, sizes = set(range(len(workers))), [], []
    try:
        while running:
            try:
                kind, k, payload = out.get(timeout=_POLL_SECONDS)
            except queue_module.Empty:
                for k in list(running):
                    if not workers[k].is_alive() and out.empty():
                        running.discard(k)
                        errors.append(f"{devices[k]}: the worker exited with code {workers[k].exitcode} and no report")
                continue
            if kind == "batch":
                indices, answers = payload
                on_batch([shards[k][i] for i in indices], answers)
            else:
                running.discard(k)
                if kind == "done":
                    sizes += payload
                else:
                    errors.append(f"{devices[k]}: {payload}")
    finally:
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.terminate()
    if errors:
        raise ShardError("generation failed on " + "; ".join(errors))
    return sizes


class ShardedEngine:
    """``--gpus N`` behind the engines' interface: ``render`` keeps (instruction, system prompt) for
    the workers, which render with their own tokenizer; ``generate`` runs :func:`generate_sharded`."""

    def __init__(self, spec: Any, settings: Any, devices: list[str]) -> None:
        self.spec, self.settings, self.devices = spec, settings, devices
        self.batch_sizes: list[int] = []

    def render(self, instruction: str, system_prompt: str | None) -> tuple[str, str | None]:
        return instruction, system_prompt

    def generate(
        self, prompts: Sequence[tuple[str, str | None]], max_new_tokens: int, batch_size: int | None,
        on_batch: Callable[[list[int], list[Answer]], None], on_step: Callable[[int], None] | None = None,
    ) -> None:
        """Answers go to ``on_batch`` as workers finish batches; the settings carry max_new_tokens
        and the batch size to the workers."""
        lengths = [len(instruction) for instruction, _ in prompts]
        self.batch_sizes += generate_sharded(self.spec, self.settings, prompts, lengths, self.devices, on_batch)
