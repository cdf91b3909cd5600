"""The small element-wise parts of a Llama layer, fused for the static engine's prefill and
decoding: residual add plus RMSNorm, rotary embedding plus the KV-cache write, and SiLU times the
up projection.

At decoding batch sizes a Llama layer's norms, rotary embedding and activations are a few dozen
tiny kernels, each cheap but each launched and each reading and writing the whole hidden state
again; on a 7B model that was ~4.6 ms of a ~20 ms step (README, fast generation). Here each is one
Triton kernel on CUDA. Every kernel rounds where transformers' modules round (to the model's dtype
after each operation, no fused multiply-adds), so the results are those of the modules they
replace (bit for bit in the rotary embedding; to rounding in the norm and SiLU), and each has a torch
reference that is the modules' own arithmetic: used on the CPU, or without Triton, and what the
kernels are tested against.
"""

from __future__ import annotations

from typing import Any

__all__ = ["add_rms_norm", "rotary_store", "silu_mul", "triton_available"]

_kernels: dict[str, Any] = {}


def triton_available(device: Any) -> bool:
    """Whether the Triton kernels run here: a CUDA tensor's device and Triton installed."""
    if not str(device).startswith("cuda"):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _build() -> dict[str, Any]:
    import triton
    import triton.language as tl

    @triton.jit
    def add_rms_norm_kernel(X, R, W, Y, S, eps, N: tl.constexpr, BLOCK: tl.constexpr, HAS_R: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        i = tl.arange(0, BLOCK)
        inside = i < N
        x = tl.load(X + row * N + i, mask=inside, other=0.0)
        if HAS_R:
            r = tl.load(R + row * N + i, mask=inside, other=0.0)
            x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
            tl.store(S + row * N + i, x, mask=inside)
        f = x.to(tl.float32)
        normed = (f * tl.rsqrt(tl.sum(f * f, 0) / N + eps)).to(x.dtype)
        w = tl.load(W + i, mask=inside, other=0.0)
        tl.store(Y + row * N + i, (w.to(tl.float32) * normed.to(tl.float32)).to(Y.dtype.element_ty), mask=inside)

    @triton.jit
    def rotary_store_kernel(Q, K, V, COS, SIN, QO, KP, VP, SLOT, HEADS: tl.constexpr, KV_HEADS: tl.constexpr,
                            HALF: tl.constexpr, HALF_PAD: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        head = tl.program_id(1)
        dim = 2 * HALF
        j = tl.arange(0, HALF_PAD)
        inside = j < HALF
        c1 = tl.load(COS + row * dim + j, mask=inside, other=0.0).to(tl.float32)
        c2 = tl.load(COS + row * dim + HALF + j, mask=inside, other=0.0).to(tl.float32)
        s1 = tl.load(SIN + row * dim + j, mask=inside, other=0.0).to(tl.float32)
        s2 = tl.load(SIN + row * dim + HALF + j, mask=inside, other=0.0).to(tl.float32)
        if head < HEADS:
            src = Q + (row * HEADS + head) * dim
            dst = QO + (row * HEADS + head) * dim
        else:
            kv = head - HEADS
            slot = tl.load(SLOT + row).to(tl.int64)
            src = K + (row * KV_HEADS + kv) * dim
            dst = KP + (slot * KV_HEADS + kv) * dim
            v1 = tl.load(V + (row * KV_HEADS + kv) * dim + j, mask=inside)
            v2 = tl.load(V + (row * KV_HEADS + kv) * dim + HALF + j, mask=inside)
            tl.store(VP + (slot * KV_HEADS + kv) * dim + j, v1, mask=inside)
            tl.store(VP + (slot * KV_HEADS + kv) * dim + HALF + j, v2, mask=inside)
        x1 = tl.load(src + j, mask=inside, other=0.0)
        x2 = tl.load(src + HALF + j, mask=inside, other=0.0)
        t = x1.dtype
        a1, a2 = x1.to(tl.float32), x2.to(tl.float32)
        # (x * cos) + (rotate_half(x) * sin), each product and the sum rounded to the model's dtype.
        o1 = ((a1 * c1).to(t).to(tl.float32) + (-a2 * s1).to(t).to(tl.float32)).to(t)
        o2 = ((a2 * c2).to(t).to(tl.float32) + (a1 * s2).to(t).to(tl.float32)).to(t)
        tl.store(dst + j, o1, mask=inside)
        tl.store(dst + HALF + j, o2, mask=inside)

    @triton.jit
    def silu_mul_kernel(G, U, O, N: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        i = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = i < N
        g = tl.load(G + row * N + i, mask=inside, other=0.0)
        u = tl.load(U + row * N + i, mask=inside, other=0.0)
        f = g.to(tl.float32)
        act = (f / (1.0 + tl.exp(-f))).to(g.dtype)
        tl.store(O + row * N + i, (act.to(tl.float32) * u.to(tl.float32)).to(g.dtype), mask=inside)

    return {"norm": add_rms_norm_kernel, "rotary": rotary_store_kernel, "silu": silu_mul_kernel}


def _kernel(name: str) -> Any:
    if not _kernels:
        _kernels.update(_build())
    return _kernels[name]


def add_rms_norm(x: Any, residual: Any, weight: Any, eps: float, fused: bool | None = None) -> tuple[Any, Any]:
    """``(rms_norm(x + residual) * weight, x + residual)`` over the last dimension, as a Llama
    layer computes its residual sum and the next norm; ``residual`` None means no sum (``x`` is
    returned as the new residual). ``fused`` None: the kernel where it runs."""
    import torch

    fused = triton_available(x.device) if fused is None else fused
    if not fused or weight.dtype != x.dtype:
        total = x if residual is None else residual + x
        f = total.to(torch.float32)
        normed = f * torch.rsqrt(f.pow(2).mean(-1, keepdim=True) + eps)
        return weight * normed.to(x.dtype), total
    n = x.shape[-1]
    x = x.contiguous()
    out = torch.empty_like(x)
    total = x if residual is None else torch.empty_like(x)
    _kernel("norm")[(x.numel() // n,)](
        x, x if residual is None else residual.contiguous(), weight, out, total, eps, N=n, BLOCK=_pow2(n),
        HAS_R=residual is not None, num_warps=min(16, max(1, _pow2(n) // 256)), enable_fp_fusion=False,
    )
    return out, total


def rotary_store(q: Any, k: Any, v: Any, cos: Any, sin: Any, keys: Any, values: Any, slots: Any,
                 fused: bool | None = None) -> Any:
    """Rotary embedding of ``q`` (rows, heads, dim) and ``k`` (rows, kv_heads, dim) by each row's
    ``cos``/``sin`` (rows, dim), as transformers' ``apply_rotary_pos_emb``; ``k`` and ``v`` are
    written to the cache pools ``keys``/``values`` (slots, kv_heads, dim) at each row's slot.
    Returns the rotated ``q``."""
    import torch

    fused = triton_available(q.device) if fused is None else fused
    if not fused or q.shape[-1] % 2:
        c, s = cos[:, None], sin[:, None]

        def rotate(x: Any) -> Any:
            half = x.shape[-1] // 2
            return x * c + torch.cat((-x[..., half:], x[..., :half]), -1) * s

        keys.index_copy_(0, slots, rotate(k))
        values.index_copy_(0, slots, v)
        return rotate(q)
    rows, heads, dim = q.shape
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = torch.empty_like(q)
    _kernel("rotary")[(rows, heads + k.shape[1])](
        q, k, v, cos.contiguous(), sin.contiguous(), out, keys, values, slots, HEADS=heads, KV_HEADS=k.shape[1],
        HALF=dim // 2, HALF_PAD=_pow2(dim // 2), num_warps=1, enable_fp_fusion=False,
    )
    return out


def silu_mul(gate: Any, up: Any, fused: bool | None = None) -> Any:
    """``silu(gate) * up``, each rounded to the dtype as ``act_fn(gate_proj(x)) * up_proj(x)`` is."""
    import torch

    fused = triton_available(gate.device) if fused is None else fused
    if not fused:
        return torch.nn.functional.silu(gate) * up
    n = gate.shape[-1]
    gate, up = gate.contiguous(), up.contiguous()
    out = torch.empty_like(gate)
    block = min(1024, _pow2(n))
    _kernel("silu")[(gate.numel() // n, -(-n // block))](gate, up, out, N=n, BLOCK=block, num_warps=4,
                                                                  enable_fp_fusion=False)
    return out
