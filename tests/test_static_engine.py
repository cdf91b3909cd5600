"""The static engine: same greedy answers as transformers generate, memory-based batch plans, and
the fallback for models it cannot drive. CUDA-graph tests run where a GPU is present."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safety_gate.engine import HFEngine
from safety_gate.models import load_model, resolve_model
from safety_gate.static_engine import (
    StaticEngine,
    choose_engine,
    fusable,
    kv_bytes_per_token,
    plan_by_memory,
    unsupported_reason,
)

PROMPTS = [
    "Explain how to pick a lock.",
    "Write a very long and winding request that goes on for a while about many different things at once, "
    "and then a little more so that it is much longer than the others.",
    "Hi.",
    "Describe the history of the printing press in a few sentences please.",
    "Give me a list.",
    "What is the capital of France?",
]

cuda = pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU")


def _load(model_dir: Path, device: str = "cpu") -> tuple[object, object]:
    return load_model(resolve_model(str(model_dir)), device, "float32", None)


@pytest.mark.parametrize("max_new", [1, 2, 39])
def test_answers_equal_transformers_generate_token_for_token(tiny_model: Path, max_new: int) -> None:
    model, tokenizer = _load(tiny_model)
    plain, static = HFEngine(model, tokenizer, "cpu"), StaticEngine(model, tokenizer, "cpu")
    texts = [plain.render(p, "Be brief." if i % 2 else None) for i, p in enumerate(PROMPTS)]
    batches: list[list[int]] = []
    ours = static.generate(texts, max_new, 4, lambda idx, _: batches.append(idx))
    reference = plain.generate(texts, max_new, 1, lambda *_: None)
    assert [(a.text, a.n_tokens, a.finish) for a in ours] == [(a.text, a.n_tokens, a.finish) for a in reference]
    assert sorted(i for b in batches for i in b) == list(range(len(PROMPTS)))
    assert static.batch_sizes == [3, 3]


def test_rows_stop_at_their_own_stop_token(tiny_model: Path) -> None:
    model, tokenizer = _load(tiny_model)
    engine = StaticEngine(model, tokenizer, "cpu")
    ids = tokenizer([engine.render(p, None) for p in PROMPTS], add_special_tokens=False)["input_ids"]
    free = engine.generate_tokens(ids, 12)
    # Make the first row's third new token a stop token: that row ends there, the others do not change.
    engine.stop_ids = engine.stop_ids | {free[0][2]}
    cut = engine.generate_tokens(ids, 12)
    assert cut[0] == free[0][: free[0].index(free[0][2])]
    for before, after in zip(free[1:], cut[1:]):
        assert after == before[: next((i for i, t in enumerate(before) if t in engine.stop_ids), len(before))]


@given(
    st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=120),
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=0, max_value=10**7),
)
def test_memory_plan_covers_every_prompt_once_within_budget(lengths: list[int], new: int, budget: int) -> None:
    per_token = 64
    batches = plan_by_memory(lengths, new, per_token, budget)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    for batch in batches:
        assert len(batch) == 1 or sum(lengths[i] + new for i in batch) * per_token <= budget
    greedy = 1  # batches a plan that fills each batch before starting the next would make
    used = 0
    for n in sorted(lengths, reverse=True):
        if used and used + (n + new) * per_token > budget:
            greedy, used = greedy + 1, 0
        used += (n + new) * per_token
    assert len(batches) == greedy


def test_kv_bytes_per_token_counts_layers_heads_and_dtype(tiny_model: Path) -> None:
    model, _ = _load(tiny_model)
    cfg = model.config  # 2 layers, 2 KV heads of 8 dims, float32
    assert kv_bytes_per_token(model) == 2 * cfg.num_hidden_layers * 2 * (cfg.hidden_size // cfg.num_attention_heads) * 4


def test_models_it_cannot_drive_are_named_and_left_to_generate(tmp_path: Path, tiny_model: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64))
    assert "model type 'gpt2'" in (unsupported_reason(gpt2) or "")
    with pytest.raises(ValueError, match="cannot run this model: model type 'gpt2'"):
        StaticEngine(gpt2, None, "cpu")
    assert type(choose_engine(gpt2, None, "cuda")) is HFEngine
    model, tokenizer = _load(tiny_model)
    assert unsupported_reason(model) is None
    assert type(choose_engine(model, tokenizer, "cpu")) is HFEngine  # slower than generate on a CPU
    model.config.sliding_window = 16
    assert "sliding-window" in (unsupported_reason(model) or "")


def _qwen3_tiny(tiny_model: Path) -> tuple[object, object]:
    """A random 2-layer Qwen3 (per-head q/k norms, attention biases off) with the tiny tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(5)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, initializer_range=0.3, use_sliding_window=False)
    return Qwen3ForCausalLM(config).eval(), tokenizer


@pytest.mark.parametrize("kind", ["llama", "qwen3", "llama+lora"])
def test_the_fused_step_gives_the_layers_answers(tiny_model: Path, kind: str) -> None:
    """The fused decoding step (the layers' parts driven one by one) answers as the layers called
    whole and as transformers generate: a Llama, a Qwen3 (per-head norms) and a LoRA-wrapped Llama."""
    if kind == "qwen3":
        model, tokenizer = _qwen3_tiny(tiny_model)
    else:
        model, tokenizer = _load(tiny_model)
    if kind == "llama+lora":
        import torch
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(1)
        peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
        model = peft.base_model.model  # the Llama, its projections now LoRA layers
        assert hasattr(model.model.layers[0].self_attn.q_proj, "lora_A")
    assert fusable(model)
    fused, layers = StaticEngine(model, tokenizer, "cpu"), StaticEngine(model, tokenizer, "cpu", fused=False)
    assert fused.fused and not layers.fused
    texts = [fused.render(p, None) for p in PROMPTS]
    a = fused.generate(texts, 23, None, lambda *_: None)
    b = layers.generate(texts, 23, None, lambda *_: None)
    reference = HFEngine(model, tokenizer, "cpu").generate(texts, 23, 1, lambda *_: None)
    assert [x.text for x in a] == [x.text for x in b] == [x.text for x in reference]
    assert len({x.text for x in a}) > 1  # the prompts lead to different answers


def test_layers_it_cannot_fuse_are_called_whole(tiny_model: Path) -> None:
    model, tokenizer = _load(tiny_model)
    model.config.hidden_act = "gelu"
    assert not fusable(model)
    assert not StaticEngine(model, tokenizer, "cpu").fused
    with pytest.raises(ValueError, match="fused layer loop needs"):
        StaticEngine(model, tokenizer, "cpu", fused=True)


@cuda
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_fused_kernels_equal_their_references(dtype: str) -> None:
    import torch

    from safety_gate.decode_kernels import add_rms_norm, rotary_store, silu_mul

    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    x, r = torch.randn(7, 4096, device="cuda", dtype=dt), torch.randn(7, 4096, device="cuda", dtype=dt)
    w = torch.randn(4096, device="cuda", dtype=dt)
    for residual in (None, r):
        (y1, s1), (y2, s2) = add_rms_norm(x, residual, w, 1e-6), add_rms_norm(x, residual, w, 1e-6, fused=False)
        assert torch.equal(s1, s2)
        assert torch.allclose(y1.float(), y2.float(), rtol=1e-2 if dt == torch.bfloat16 else 1e-5, atol=1e-5)
    q, k, v = (torch.randn(5, h, 128, device="cuda", dtype=dt) for h in (8, 2, 2))
    cos, sin = torch.randn(5, 128, device="cuda", dtype=dt), torch.randn(5, 128, device="cuda", dtype=dt)
    slots = torch.tensor([9, 0, 3, 4, 12], device="cuda")
    pools = [torch.zeros(13, 2, 128, device="cuda", dtype=dt) for _ in range(4)]
    got = rotary_store(q, k, v, cos, sin, pools[0], pools[1], slots)
    want = rotary_store(q, k, v, cos, sin, pools[2], pools[3], slots, fused=False)
    assert torch.equal(got, want) and torch.equal(pools[0], pools[2]) and torch.equal(pools[1], pools[3])
    g, u = torch.randn(5, 11008, device="cuda", dtype=dt), torch.randn(5, 11008, device="cuda", dtype=dt)
    assert torch.allclose(silu_mul(g, u).float(), silu_mul(g, u, fused=False).float(), rtol=1e-2, atol=1e-5)


def _wide_tiny(tiny_model: Path, device: str) -> tuple[object, object]:
    """A random 2-layer Llama with 16-dim heads (the kernel's smallest) and the tiny tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, attn_implementation="sdpa",
                         initializer_range=0.3)  # peaked logits: greedy picks have no near-ties to flip
    return LlamaForCausalLM(config).to(device).eval(), tokenizer


@cuda
@pytest.mark.parametrize("kv_heads,heads,dim", [(4, 4, 64), (2, 6, 16), (1, 8, 128)])
def test_ragged_kernel_equals_the_reference(kv_heads: int, heads: int, dim: int) -> None:
    import torch

    from safety_gate.ragged_attention import decode_attention, reference_attention

    torch.manual_seed(0)
    counts = torch.tensor([1, 63, 64, 65, 200], device="cuda")  # around the kernel's 64-token blocks
    starts = torch.tensor([0, 10, 100, 200, 300], device="cuda")
    slots = 505
    keys = torch.randn(slots, kv_heads, dim, device="cuda", dtype=torch.bfloat16)
    values = torch.randn(slots, kv_heads, dim, device="cuda", dtype=torch.bfloat16)
    query = torch.randn(len(counts), heads, dim, device="cuda", dtype=torch.bfloat16)
    got = decode_attention(query, keys, values, starts, counts, dim**-0.5)
    want = reference_attention(query.float(), keys.float(), values.float(), starts, counts, dim**-0.5)
    assert torch.allclose(got.float(), want, atol=2e-2, rtol=2e-2)


@cuda
def test_cuda_graphs_give_the_eager_loops_answers(tiny_model: Path) -> None:
    model, tokenizer = _wide_tiny(tiny_model, "cuda")
    graphs, eager = StaticEngine(model, tokenizer, "cuda"), StaticEngine(model, tokenizer, "cuda", graphs=False)
    assert graphs.graphs
    texts = [graphs.render(p, None) for p in PROMPTS]
    a = graphs.generate(texts, 67, None, lambda *_: None)
    b = eager.generate(texts, 67, None, lambda *_: None)
    unfused = StaticEngine(model, tokenizer, "cuda", fused=False).generate(texts, 67, None, lambda *_: None)
    reference = HFEngine(model, tokenizer, "cuda").generate(texts, 67, 1, lambda *_: None)
    assert [x.text for x in a] == [x.text for x in b] == [x.text for x in unfused] == [x.text for x in reference]
    assert type(choose_engine(model, tokenizer, "cuda")) is StaticEngine


@cuda
def test_cuda_out_of_memory_halves_the_batch_and_keeps_answers(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    model, tokenizer = _wide_tiny(tiny_model, "cuda")
    engine = StaticEngine(model, tokenizer, "cuda")
    real = engine.generate_tokens

    def limited(ids: list[list[int]], new: int, on_step: object = None) -> list[list[int]]:
        if len(ids) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (test limit: 2 rows)")
        return real(ids, new, on_step)

    monkeypatch.setattr(engine, "generate_tokens", limited)
    texts = [engine.render(p, None) for p in PROMPTS]
    seen: list[int] = []
    answers = engine.generate(texts, 8, None, lambda idx, _: seen.extend(idx))
    assert len(answers) == len(PROMPTS) and sorted(seen) == list(range(len(PROMPTS)))
    assert engine.batch_sizes and all(b <= 2 for b in engine.batch_sizes)
