"""Fast greedy generation: our own decoding loop over the model's layers, a ragged preallocated
KV cache and, on CUDA, the whole decoding step as one CUDA graph.

``model.generate`` spends most of a decoding step in Python and kernel launches when the model is
large and the batch is big (DESIGN.md: 73 s for 330 x 256 tokens on an H100 where the memory
bandwidth allows ~7 s). This engine keeps the model's own modules and weights (the layers, rotary
embedding, norm and head of a Llama-family model) and changes how they are driven:

- a KV cache per batch, one pool per layer in which each row owns exactly its prompt length plus
  ``max_new_tokens`` slots: no padding is stored or read (``ragged_attention``);
- a whole decoding step (layers, greedy pick, stop check, writing the token, moving positions on)
  captured once as a CUDA graph, so the CPU only replays it and synchronises every
  ``CHECK_EVERY`` steps to stop once every row has finished;
- batches as large as free GPU memory allows, from the cache's bytes per token;
- prefill in row chunks (padded only to the chunk's longest prompt), logits for the last position only;
- the layers' own projections between fused kernels for the residual sums and norms, the rotary
  embedding with the cache write, and the activation (``decode_kernels``), in prefill and in
  decoding, where the layers are the standard ones (``fusable``); other layers are called whole.

On the CPU the same loop runs eagerly. Answers match ``model.generate`` token for token where the
arithmetic is the same (float32, tests/test_static_engine.py). Architectures outside
``SUPPORTED`` fall back to :class:`~safety_gate.engine.HFEngine` (``unsupported_reason``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .decode_kernels import add_rms_norm, rotary_store, silu_mul
from .engine import Answer, HFEngine
from .ragged_attention import decode_attention, kernel_available

__all__ = ["StaticEngine", "choose_engine", "fusable", "kv_bytes_per_token", "plan_by_memory", "unsupported_reason"]

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")
CHECK_EVERY = 32  # decoding steps between checks whether every row has finished
PREFILL_TOKENS = 8192  # prompt tokens per prefill chunk (bounds the activations' memory)
MAX_BATCH = 1024
_ATTENTION = "safety_gate_static"


def unsupported_reason(model: Any) -> str | None:
    """Why this engine cannot drive ``model`` (None when it can)."""
    cfg = model.config
    kind = getattr(cfg, "model_type", None)
    if kind not in SUPPORTED:
        return f"model type {kind!r} is not one of {', '.join(SUPPORTED)}"
    inner = getattr(model, "model", None)
    missing = [n for n in ("embed_tokens", "layers", "norm", "rotary_emb") if not hasattr(inner, n)]
    if missing or not hasattr(model, "lm_head"):
        return f"the model lacks {', '.join(missing or ['lm_head'])}"
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return "sliding-window attention is not supported"
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or []):
        return "layers other than full attention are not supported"
    return None


_NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm")


def fusable(model: Any) -> bool:
    """Whether prefill and decoding can drive the layers' parts themselves (``_Batch._forward``):
    SiLU activations, the projections where transformers puts them (LoRA-wrapped projections are
    fine: they are called as modules) and every norm one of the standard RMSNorms."""
    if getattr(model.config, "hidden_act", None) not in ("silu", "swish"):
        return False
    inner = model.model
    norms = [inner.norm]
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if not all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj", "scaling")):
            return False
        if not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
            return False
        norms += [layer.input_layernorm, layer.post_attention_layernorm]
        norms += [getattr(attn, n) for n in ("q_norm", "k_norm") if hasattr(attn, n)]
    return all(type(n).__name__ in _NORMS and hasattr(n, "variance_epsilon") for n in norms)


def _heads(model: Any) -> tuple[int, int, int]:
    cfg = model.config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    return heads, kv_heads, getattr(cfg, "head_dim", None) or cfg.hidden_size // heads


def kv_bytes_per_token(model: Any) -> int:
    """Bytes of KV cache one token takes across all layers."""
    _, kv_heads, head_dim = _heads(model)
    return 2 * model.config.num_hidden_layers * kv_heads * head_dim * next(model.parameters()).element_size()


def plan_by_memory(
    lengths: Sequence[int], max_new_tokens: int, bytes_per_token: int, budget: int, cap: int = MAX_BATCH
) -> list[list[int]]:
    """Indices in batches, longest prompts first, each batch as large as its rows' KV cache
    (prompt plus ``max_new_tokens`` each) lets it be within ``budget`` bytes (at least one row)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in order:
        need = (lengths[i] + max_new_tokens) * bytes_per_token
        if current and (used + need > budget or len(current) == cap):
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += need
    batches += [current] if current else []
    # The same number of batches, evened out, when every batch still fits: a small last batch
    # costs as many weight reads per step as a full one, and mid-sized products run nearer peak.
    size = -(-len(order) // max(1, len(batches)))
    even = [order[i : i + size] for i in range(0, len(order), size)]
    if all(sum(lengths[i] + max_new_tokens for i in b) * bytes_per_token <= budget and len(b) <= cap for b in even):
        return even
    return batches


def _attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
               scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    """Attention for this engine's two phases. Decoding (``key`` is a whole pool, 3-D): the ragged
    kernel, with ``attention_mask`` carrying each row's (start, count). Prefill: dense attention
    within the chunk under an additive mask."""
    import torch.nn.functional as F

    if key.dim() == 3:
        start, count = attention_mask
        return decode_attention(query[:, :, 0], key, value, start, count, scaling)[:, None], None
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def _prefill_attention() -> Any:
    """SDPA backends for prefill: not cuDNN, which builds a new plan (~1 s on an H100) for every
    chunk shape it meets, and every chunk has its own width."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH])


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(_ATTENTION, _attention)


class _Cache:
    """One batch's keys and values: a pool of slots per layer, row ``b`` owning ``caps[b]`` slots
    from ``span[0][b]``, of which ``length[b]`` are filled. Prefill writes the chunk's real tokens
    (``write``: chunk row, column and slot of each); a decoding step writes each row's next slot."""

    def __init__(self, model: Any, caps: list[int], dtype: Any, device: str) -> None:
        import torch

        _, kv_heads, head_dim = _heads(model)
        self.head_dim = head_dim
        # One slot more than the rows own: the fused prefill's padding tokens write there.
        shape = (sum(caps) + 1, kv_heads, head_dim)
        self.spare = sum(caps)
        layers = model.config.num_hidden_layers
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        firsts = [0]
        for cap in caps[:-1]:
            firsts.append(firsts[-1] + cap)
        # span[0]: each row's first slot; span[1]: how many slots a decoding step attends to.
        self.span = torch.tensor([firsts, [0] * len(caps)], dtype=torch.long, device=device)
        self.length = torch.zeros(len(caps), dtype=torch.long, device=device)
        self.write: tuple[Any, Any, Any] | None = None

    def update(self, key: Any, value: Any, layer_idx: int, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        k, v = self.keys[layer_idx], self.values[layer_idx]
        if self.write is not None:  # prefill: store the real tokens, attend within the chunk
            rows, cols, slots = self.write
            k.index_copy_(0, slots, key.transpose(1, 2)[rows, cols])
            v.index_copy_(0, slots, value.transpose(1, 2)[rows, cols])
            return key, value
        slots = self.span[0] + self.length
        k.index_copy_(0, slots, key[:, :, 0])
        v.index_copy_(0, slots, value[:, :, 0])
        return k, v


class _Batch:
    """The state of one batch being decoded: cache, current tokens and positions, output."""

    def __init__(self, engine: "StaticEngine", ids: list[list[int]], max_new_tokens: int) -> None:
        import torch

        model, device = engine.model, engine.device
        self.engine = engine
        self.ids = ids
        self.n = len(ids)
        self.max_new = max_new_tokens
        self.dtype = next(model.parameters()).dtype
        self.cache = _Cache(model, [len(row) + max_new_tokens for row in ids], self.dtype, device)
        self.token = torch.zeros(self.n, 1, dtype=torch.long, device=device)
        self.position = torch.tensor([[len(row)] for row in ids], dtype=torch.long, device=device)
        self.step = torch.zeros(1, dtype=torch.long, device=device)
        self.out = torch.full((self.n, max_new_tokens), engine.pad_id, dtype=torch.long, device=device)
        self.done = torch.zeros(self.n, dtype=torch.bool, device=device)
        self.stops = torch.tensor(sorted(engine.stop_ids) or [-1], device=device)

    def _layers(self, hidden: Any, mask: Any, position: Any) -> Any:
        model = self.engine.model
        inner = model.model
        cos_sin = inner.rotary_emb(hidden, position)
        for layer in inner.layers:
            hidden = layer(hidden, attention_mask=mask, position_ids=position, past_key_values=self.cache,
                           use_cache=True, position_embeddings=cos_sin)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return model.lm_head(inner.norm(hidden[:, -1]))

    def prefill(self) -> None:
        """Run the prompts chunk by chunk (padded to the chunk's longest), fill the cache, pick
        each row's first token."""
        import torch

        device = self.token.device
        first_slot = self.cache.span[0].tolist()
        order = sorted(range(self.n), key=lambda i: -len(self.ids[i]))
        while order:
            width = len(self.ids[order[0]])
            chunk, order = order[: max(1, PREFILL_TOKENS // width)], order[max(1, PREFILL_TOKENS // width):]
            with _prefill_attention():
                if self.engine.fused:
                    logits = self._prefill_fused(chunk, width, first_slot)
                else:
                    logits = self._prefill_layers(chunk, width, first_slot)
            self.token[torch.tensor(chunk, device=device), 0] = logits.argmax(-1)
        self.cache.length.copy_(self.position[:, 0])
        self._emit()

    def _prefill_layers(self, chunk: list[int], width: int, first_slot: list[int]) -> Any:
        """A prefill chunk through the layers called whole: left-padded, an additive mask."""
        import torch

        device = self.token.device
        pads = [width - len(self.ids[i]) for i in chunk]
        tokens = torch.tensor([[self.engine.pad_id] * p + self.ids[i] for i, p in zip(chunk, pads)], device=device)
        real = torch.tensor([[False] * p + [True] * (width - p) for p in pads], device=device)
        positions = (real.long().cumsum(1) - 1).clamp(min=0)
        # A padding query attends to itself only, so no row of the mask is all blocked.
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        allowed = (causal & real[:, None, :]) | torch.eye(width, dtype=torch.bool, device=device)
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=device)
        mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        rows = [r for r, p in enumerate(pads) for _ in range(width - p)]
        cols = [c for p in pads for c in range(p, width)]
        slots = [first_slot[i] + c for i, p in zip(chunk, pads) for c in range(width - p)]
        self.cache.write = tuple(torch.tensor(x, device=device) for x in (rows, cols, slots))
        try:
            return self._layers(self.engine.model.model.embed_tokens(tokens), mask[:, None], positions)
        finally:
            self.cache.write = None

    def _prefill_fused(self, chunk: list[int], width: int, first_slot: list[int]) -> Any:
        """A prefill chunk through :meth:`_forward`: right-padded, so plain causal attention is
        right for every real token; padding writes its keys to the cache's spare slot."""
        import torch
        import torch.nn.functional as F

        device, cache = self.token.device, self.cache
        lengths = [len(self.ids[i]) for i in chunk]
        tokens = torch.tensor([self.ids[i] + [self.engine.pad_id] * (width - n) for i, n in zip(chunk, lengths)],
                              device=device)
        positions = torch.arange(width, device=device).expand(len(chunk), width)
        slots = torch.tensor([first_slot[i] + c if c < n else cache.spare for i, n in zip(chunk, lengths)
                              for c in range(width)], device=device)
        last = torch.tensor([r * width + n - 1 for r, n in enumerate(lengths)], device=device)
        rows = len(chunk)

        def attend(q: Any, layer: int, attn: Any) -> Any:
            heads, kv_heads = q.shape[1], cache.keys[layer].shape[1]
            k, v = (pool[slots].view(rows, width, kv_heads, -1).transpose(1, 2)
                    for pool in (cache.keys[layer], cache.values[layer]))
            if heads > kv_heads:
                k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
            q = q.view(rows, width, heads, -1).transpose(1, 2)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attn.scaling)
            return out.transpose(1, 2).reshape(rows * width, -1)

        return self._forward(tokens, positions, slots, attend, last)

    def _emit(self) -> None:
        """Record the current tokens as output ``step``, mark stopped rows."""
        import torch

        token = torch.where(self.done, self.engine.pad_id, self.token[:, 0])
        self.out.index_copy_(1, self.step, token[:, None])
        self.done |= (token[:, None] == self.stops[None, :]).any(1)  # isin may synchronise
        self.token[:, 0] = token
        self.step += 1

    def _forward(self, tokens: Any, position: Any, slots: Any, attend: Callable[[Any, int, Any], Any],
                 last: Any = None) -> Any:
        """Logits of ``tokens`` (rows, width) at ``position``, the layers' parts driven one by one:
        what the layers compute, with the element-wise work between the projections fused
        (``decode_kernels``). Each token's keys and values go to its cache slot (``slots``, one
        per token); ``attend(q, layer, attention module)`` gives the attention output of the
        rotated queries (tokens, heads, dim). Logits for the tokens at flat index ``last``, or
        for every token."""
        inner, cache = self.engine.model.model, self.cache
        hidden = inner.embed_tokens(tokens)
        cos, sin = (t.reshape(-1, t.shape[-1]) for t in inner.rotary_emb(hidden, position))
        hidden = hidden.view(-1, hidden.shape[-1])
        n, residual = hidden.shape[0], None
        for i, layer in enumerate(inner.layers):
            attn, mlp = layer.self_attn, layer.mlp
            norm = layer.input_layernorm
            x, residual = add_rms_norm(hidden, residual, norm.weight, norm.variance_epsilon)
            q = attn.q_proj(x).view(n, -1, cache.head_dim)
            k = attn.k_proj(x).view(n, -1, cache.head_dim)
            if hasattr(attn, "q_norm"):  # Qwen3: a norm over each head before the rotary embedding
                q = add_rms_norm(q, None, attn.q_norm.weight, attn.q_norm.variance_epsilon)[0]
                k = add_rms_norm(k, None, attn.k_norm.weight, attn.k_norm.variance_epsilon)[0]
            v = attn.v_proj(x).view(n, -1, cache.head_dim)
            q = rotary_store(q, k, v, cos, sin, cache.keys[i], cache.values[i], slots)
            norm = layer.post_attention_layernorm
            x, residual = add_rms_norm(attn.o_proj(attend(q, i, attn)), residual, norm.weight, norm.variance_epsilon)
            hidden = mlp.down_proj(silu_mul(mlp.gate_proj(x), mlp.up_proj(x)))
        if last is not None:
            hidden, residual = hidden[last], residual[last]
        x, _ = add_rms_norm(hidden, residual, inner.norm.weight, inner.norm.variance_epsilon)
        return self.engine.model.lm_head(x)

    def decode_step(self) -> None:
        """One decoding step for every row (graph-capturable: no host synchronisation)."""
        cache = self.cache
        cache.span[1].copy_(cache.length + 1)
        if self.engine.fused:
            def attend(q: Any, layer: int, attn: Any) -> Any:
                out = decode_attention(q, cache.keys[layer], cache.values[layer], cache.span[0], cache.span[1],
                                       attn.scaling)
                return out.view(self.n, -1)

            logits = self._forward(self.token, self.position, cache.span[0] + cache.length, attend)
        else:
            logits = self._layers(self.engine.model.model.embed_tokens(self.token), cache.span, self.position)
        self.token[:, 0] = logits.argmax(-1)
        self._emit()
        self.position += 1
        cache.length += 1


class StaticEngine(HFEngine):
    """Greedy batched generation through :class:`_Batch`; same interface as :class:`HFEngine`."""

    def __init__(self, model: Any, tokenizer: Any, device: str, graphs: bool | None = None,
                 fused: bool | None = None) -> None:
        super().__init__(model, tokenizer, device)
        reason = unsupported_reason(model)
        if reason:
            raise ValueError(f"the static engine cannot run this model: {reason}")
        # A graph needs a step with no host synchronisation: the Triton kernel, not the reference.
        capturable = kernel_available(_heads(model)[2], device)
        if graphs and not capturable:
            raise ValueError(f"CUDA graphs need the ragged-attention kernel, which does not apply here "
                             f"(device {device}, head size {_heads(model)[2]}, Triton installed or not)")
        self.graphs = capturable if graphs is None else graphs
        if fused and not fusable(model):
            raise ValueError("the fused layer loop needs standard RMSNorm layers, SiLU and the usual projections")
        self.fused = fusable(model) if fused is None else fused
        self.stop_ids = self._stop_ids()
        pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
        self.pad_id = pad if pad is not None else (min(self.stop_ids) if self.stop_ids else 0)
        _register_attention()

    def _plan(self, lengths: Sequence[int], max_new_tokens: int, batch_size: int | None) -> list[list[int]]:
        if batch_size is not None or not self.device.startswith("cuda"):
            return super()._plan(lengths, max_new_tokens, batch_size)
        import torch

        device = torch.device(self.device)
        torch.cuda.synchronize(device)
        free, _ = torch.cuda.mem_get_info(device)
        # Memory PyTorch holds in its cache but no tensor uses is free for us too.
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return plan_by_memory(lengths, max_new_tokens, kv_bytes_per_token(self.model), max(free - self._reserve(), 0))

    def _reserve(self) -> int:
        """Bytes kept free beside the KV cache: one prefill chunk's activations (hidden states, the
        MLP's three intermediate products, attention scores) and 3 GiB for logits, graphs and the allocator's
        slack (with 1 GiB, 330 x 256 on a 7B model filled an H100 to 77 of 79 GiB and ran no faster than two
        batches: the allocator was freeing and retrying)."""
        cfg = self.model.config
        size = next(self.model.parameters()).element_size()
        chunk = PREFILL_TOKENS * (6 * cfg.hidden_size + 3 * cfg.intermediate_size) * size
        return chunk + 3 * 2**30

    def generate_tokens(
        self, ids: list[list[int]], max_new_tokens: int, on_step: Callable[[int], None] | None = None
    ) -> list[list[int]]:
        """New tokens for one batch of token-id prompts (each row cut at its first stop token)."""
        import torch

        config = self.model.config
        saved = config._attn_implementation
        config._attn_implementation = _ATTENTION
        try:
            with torch.inference_mode():
                batch = _Batch(self, ids, max_new_tokens)
                graph = self._graph(batch) if self.graphs and max_new_tokens > 1 else None
                batch.prefill()
                if on_step is not None:
                    on_step(batch.n)
                for step in range(max_new_tokens - 1):
                    if graph is not None:
                        graph.replay()
                    else:
                        batch.decode_step()
                    if on_step is not None:
                        on_step(batch.n)
                    if (step + 1) % CHECK_EVERY == 0 and bool(batch.done.all()):
                        break
                out = batch.out.tolist()
        finally:
            config._attn_implementation = saved
        stops = self.stop_ids
        return [row[: next((i for i, t in enumerate(row) if t in stops), len(row))] for row in out]

    def _graph(self, batch: _Batch) -> Any:
        """The decoding step captured as a CUDA graph; the batch's state is reset afterwards."""
        import torch

        state = [batch.token, batch.position, batch.step, batch.out, batch.done, batch.cache.length, batch.cache.span]
        saved = [t.clone() for t in state]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside capture: kernel compilation, library set-up
            batch.decode_step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            batch.decode_step()
        for tensor, value in zip(state, saved):
            tensor.copy_(value)
        return graph

    def _generate_batch(
        self, texts: list[str], max_new_tokens: int, on_step: Callable[[int], None] | None
    ) -> list[Answer]:
        special = not getattr(self.tokenizer, "chat_template", None)
        ids = self.tokenizer(texts, add_special_tokens=special)["input_ids"]
        answers = []
        for row in self.generate_tokens(ids, max_new_tokens, on_step):
            text = self.tokenizer.decode(row, skip_special_tokens=True).strip()
            answers.append(Answer(text, len(row), "length" if len(row) == max_new_tokens else "stop"))
        return answers


def choose_engine(model: Any, tokenizer: Any, device: str) -> HFEngine:
    """The static engine on CUDA where it supports the model; transformers generate elsewhere.

    On the CPU the loop gains nothing (no graphs to save launches; the reference attention gathers
    the cache each step), so it is not chosen there."""
    if device.startswith("cuda") and unsupported_reason(model) is None:
        return StaticEngine(model, tokenizer, device)
    return HFEngine(model, tokenizer, device)
