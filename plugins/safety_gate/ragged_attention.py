"""Decoding attention over a ragged KV cache: every row reads only its own cached tokens.

The cache is one pool per layer, ``(slots, kv_heads, head_dim)``; row ``b`` owns the slots from
``start[b]``, of which the first ``count[b]`` are filled (its prompt, then its answer so far).
Nothing is padded, so a step reads exactly the keys and values that exist, which is what bounds a
decoding step on a GPU. On CUDA a Triton kernel does it (one program per row and KV head, all
grouped query heads together, online softmax over blocks of 64 tokens); elsewhere, or for head
sizes the kernel does not take, a gather plus ``scaled_dot_product_attention`` gives the same
result (the reference the kernel is tested against).
"""

from __future__ import annotations

from typing import Any

__all__ = ["decode_attention", "kernel_available", "reference_attention"]

_BLOCK = 64
_WARPS = 4
_kernel: Any = None


def kernel_available(head_dim: int, device: str) -> bool:
    """Whether the Triton kernel applies: CUDA, Triton installed, head size a power of 2 in 16..256."""
    if not device.startswith("cuda") or head_dim < 16 or head_dim > 256 or head_dim & (head_dim - 1):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def reference_attention(query: Any, keys: Any, values: Any, start: Any, count: Any, scale: float | None) -> Any:
    """``query`` (rows, heads, dim) attending to each row's ``count`` slots from ``start``; (rows, heads, dim).
    Synchronises (the longest row sets the gather's width), so it is not graph-capturable."""
    import torch
    import torch.nn.functional as F

    rows, heads, dim = query.shape
    kv_heads = keys.shape[1]
    width = int(count.max())
    offsets = torch.arange(width, device=query.device)
    valid = offsets[None, :] < count[:, None]
    index = torch.where(valid, start[:, None] + offsets[None, :], start[:, None])
    k = keys[index].transpose(1, 2)  # rows, kv_heads, width, dim
    v = values[index].transpose(1, 2)
    mask = torch.zeros(rows, 1, 1, width, dtype=query.dtype, device=query.device)
    mask.masked_fill_(~valid[:, None, None, :], torch.finfo(query.dtype).min)
    out = F.scaled_dot_product_attention(
        query.reshape(rows, kv_heads, heads // kv_heads, dim), k, v, attn_mask=mask, scale=scale
    )
    return out.reshape(rows, heads, dim)


def _build_kernel() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def kernel(Q, K, V, O, START, COUNT, scale, HEADS: tl.constexpr, KV_HEADS: tl.constexpr,
               GROUPS: tl.constexpr, GROUPS_PAD: tl.constexpr, DIM: tl.constexpr, BLOCK: tl.constexpr,
               PRECISION: tl.constexpr):
        row = tl.program_id(0)
        kv_head = tl.program_id(1)
        start = tl.load(START + row).to(tl.int64)
        count = tl.load(COUNT + row)
        g = tl.arange(0, GROUPS_PAD)
        d = tl.arange(0, DIM)
        own = g < GROUPS
        q_off = row * HEADS * DIM + (kv_head * GROUPS + g)[:, None] * DIM + d[None, :]
        q = tl.load(Q + q_off, mask=own[:, None], other=0.0)
        best = tl.full([GROUPS_PAD], float("-inf"), tl.float32)
        total = tl.zeros([GROUPS_PAD], tl.float32)
        acc = tl.zeros([GROUPS_PAD, DIM], tl.float32)
        for first in range(0, count, BLOCK):
            n = first + tl.arange(0, BLOCK)
            filled = n < count
            kv_off = (start + n)[:, None] * (KV_HEADS * DIM) + kv_head * DIM + d[None, :]
            k = tl.load(K + kv_off, mask=filled[:, None], other=0.0)
            v = tl.load(V + kv_off, mask=filled[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
            s = tl.where(filled[None, :], s, float("-inf"))
            new_best = tl.maximum(best, tl.max(s, 1))
            keep = tl.exp(best - new_best)
            p = tl.exp(s - new_best[:, None])
            total = total * keep + tl.sum(p, 1)
            acc = acc * keep[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            best = new_best
        tl.store(O + q_off, (acc / total[:, None]).to(O.dtype.element_ty), mask=own[:, None])

    return kernel


def decode_attention(query: Any, keys: Any, values: Any, start: Any, count: Any, scale: float | None) -> Any:
    """One decoding step's attention (see the module docstring); the kernel where it applies."""
    global _kernel
    import torch

    rows, heads, dim = query.shape
    scale = dim**-0.5 if scale is None else scale
    if not kernel_available(dim, str(query.device)):
        return reference_attention(query, keys, values, start, count, scale)
    if _kernel is None:
        _kernel = _build_kernel()
    kv_heads = keys.shape[1]
    groups = heads // kv_heads
    query = query.contiguous()
    out = torch.empty_like(query)
    _kernel[(rows, kv_heads)](
        query, keys, values, out, start, count, scale, HEADS=heads, KV_HEADS=kv_heads, GROUPS=groups,
        GROUPS_PAD=max(16, 1 << (groups - 1).bit_length()), DIM=dim, BLOCK=_BLOCK,
        # float32 stays float32 (Triton would use TF32); bf16/fp16 products accumulate in float32 anyway.
        PRECISION="ieee" if query.dtype == torch.float32 else "tf32", num_warps=_WARPS,
    )
    return out
