"""Time greedy generation on one GPU: the paper's per-prompt loop, transformers generate in
length-sorted batches, and safety-gate's static engine, on one seeded workload.

The default workload is DESIGN.md's: a Llama-2-7B-shaped model in bfloat16 with random weights
(seeded; nothing downloaded), 330 prompts of 60-220 random tokens, 256 new tokens each, no early
stop. Each way is timed from the loaded model, warm-up and CUDA-graph capture included; our engine
runs first, in a fresh process, so library initialisation is charged to it. Prints wall time,
tokens/s, peak GPU memory, the memory-bandwidth bound of the GPU it runs on, and how many of our
answers equal transformers' token for token.

    python bench/gpu_generate.py                      # the full comparison (~3 min on an H100)
    python bench/gpu_generate.py --skip-hf --suite    # ours only, plus the 4 x 330 suite workload
    python bench/gpu_generate.py --shape tiny --device cpu --prompts 16 --new-tokens 16   # smoke test
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from safety_gate.engine import plan_batches  # noqa: E402
from safety_gate.static_engine import StaticEngine, kv_bytes_per_token  # noqa: E402

SHAPES = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512),
}
# Peak memory bandwidth (bytes/s) by GPU name; --bandwidth overrides.
BANDWIDTH = {"H100 PCIe": 2.0e12, "H100 NVL": 3.9e12, "H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}
TRIGGER_TOKENS = (3, 6, 9)  # the suite workload appends triggers of 3, 6 and 9 tokens


def build_model(shape: str, device: str, seed: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, bos_token_id=1, eos_token_id=None,
                         pad_token_id=0, attn_implementation="sdpa")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = None
    return model.eval()


def workload(n: int, low: int, high: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(rng.randint(low, high))] for _ in range(n)]


def bandwidth_bound(model: Any, batches: list[list[int]], new_tokens: int, bandwidth: float) -> float:
    """Seconds to read the weights and every row's real KV cache once per step, at peak bandwidth."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    per_token = kv_bytes_per_token(model)
    total = 0.0
    for lengths in batches:
        kv = sum(lengths) * new_tokens + len(lengths) * new_tokens * (new_tokens - 1) / 2
        total += new_tokens * weights + kv * per_token
    return total / bandwidth


class Timer:
    def __init__(self, device: str) -> None:
        self.device = device

    def __enter__(self) -> "Timer":
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / 2**30
        else:
            self.peak = float("nan")
        self.seconds = time.perf_counter() - self.start


def hf_generate(model: Any, prompts: list[list[int]], new_tokens: int, batch_size: int, device: str) -> list[list[int]]:
    import torch

    out: list[list[int]] = [[] for _ in prompts]
    for batch in plan_batches([len(p) for p in prompts], batch_size):
        width = max(len(prompts[i]) for i in batch)
        ids = torch.tensor([[0] * (width - len(prompts[i])) + prompts[i] for i in batch], device=device)
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch], device=device)
        with torch.inference_mode():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False, pad_token_id=0, eos_token_id=None)
        for i, row in zip(batch, gen[:, width:].tolist()):
            out[i] = row
    return out


def ours(engine: StaticEngine, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in prompts]
    for batch in engine._plan([len(p) for p in prompts], new_tokens, None):
        for i, row in zip(batch, engine.generate_tokens([prompts[i] for i in batch], new_tokens)):
            out[i] = row
        engine.batch_sizes.append(len(batch))
    return out


def _shard_worker(args: Any, shard: list[list[int]], device: str, barrier: Any, out: Any) -> None:
    import torch

    torch.cuda.set_device(device)
    model = build_model(args.shape, device, args.seed)
    engine = StaticEngine(model, None, device)
    ours(engine, shard[:8], 8)  # library set-up and kernel compilation, as the one-GPU figure's first run had
    barrier.wait()
    torch.cuda.synchronize()
    start = time.perf_counter()
    ours(engine, shard, args.new_tokens)
    torch.cuda.synchronize()
    out.put((device, start, time.perf_counter(), engine.batch_sizes))


def sharded(args: Any, prompts: list[list[int]], gpus: int) -> tuple[float, list[Any]]:
    """Wall time of ``prompts`` dealt over ``gpus`` processes, one GPU each, from a common start."""
    import multiprocessing

    from safety_gate.shards import deal

    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(gpus), ctx.Queue()
    shards = deal([len(p) for p in prompts], gpus)
    procs = [ctx.Process(target=_shard_worker, args=(args, [prompts[i] for i in s], f"cuda:{k}", barrier, out))
             for k, s in enumerate(shards)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return max(r[2] for r in results) - min(r[1] for r in results), results


def multi_gpu_line(name: str, args: Any, workload: list[list[int]], single: float) -> dict[str, Any]:
    """Time ``workload`` over ``args.gpus`` GPUs, print it with its speed-up over ``single`` seconds on one."""
    wall, results = sharded(args, workload, args.gpus)
    per_gpu = ", ".join(f"{d} {e - s:.2f} s {b}" for d, s, e, b in sorted(results))
    print(f"{name:<44} {wall:8.2f} s  {len(workload) * args.new_tokens / wall:9.0f} tok/s  speed-up over one GPU "
          f"{single / wall:.2f}x  (per GPU: {per_gpu})", flush=True)
    return {"way": name, "seconds": round(wall, 3), "speedup": round(single / wall, 2)}


def line(name: str, t: Timer, tokens: int, extra: str = "") -> dict[str, Any]:
    print(f"{name:<44} {t.seconds:8.2f} s  {tokens / t.seconds:9.0f} tok/s  peak {t.peak:6.1f} GiB  {extra}", flush=True)
    return {"way": name, "seconds": round(t.seconds, 3), "tokens_per_s": round(tokens / t.seconds, 1),
            "peak_gib": round(t.peak, 2), "note": extra}


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--prompts", type=int, default=330)
    ap.add_argument("--min-len", type=int, default=60)
    ap.add_argument("--max-len", type=int, default=220)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--hf-batch", type=int, default=128)
    ap.add_argument("--loop-sample", type=int, default=3, help="prompts timed one at a time (extrapolated)")
    ap.add_argument("--skip-hf", action="store_true", help="time only our engine")
    ap.add_argument("--suite", action="store_true", help="also time the 330 plain + 3 x 330 triggered workload")
    ap.add_argument("--gpus", type=int, default=1, help="also time the workload dealt over this many GPUs")
    ap.add_argument("--bandwidth", type=float, default=None, help="GPU memory bandwidth in bytes/s")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    dev = args.device
    t0 = time.perf_counter()
    model = build_model(args.shape, dev, args.seed)
    vocab = model.config.vocab_size
    prompts = workload(args.prompts, args.min_len, args.max_len, vocab, args.seed)
    tokens = args.prompts * args.new_tokens
    name = torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu"
    bw = args.bandwidth or next((v for k, v in BANDWIDTH.items() if k in name), None)
    print(f"{name}; {args.shape} model built in {time.perf_counter() - t0:.1f} s; {args.prompts} prompts of "
          f"{args.min_len}-{args.max_len} tokens, {args.new_tokens} new tokens each", flush=True)
    figures: dict[str, Any] = {"device": name, "shape": args.shape, "prompts": args.prompts, "new_tokens": args.new_tokens,
                               "ways": []}

    engine = StaticEngine(model, None, dev)
    with Timer(dev) as t:
        mine = ours(engine, prompts, args.new_tokens)
    figures["ways"].append(line("safety-gate static engine (first run)", t, tokens, f"batches {engine.batch_sizes}"))
    sizes = engine.batch_sizes
    engine.batch_sizes = []
    with Timer(dev) as t:
        again = ours(engine, prompts, args.new_tokens)
    figures["ways"].append(line("safety-gate static engine (again)", t, tokens))
    figures["deterministic"] = again == mine
    whole = StaticEngine(model, None, dev, fused=False)
    with Timer(dev) as t:
        unfused = ours(whole, prompts, args.new_tokens)
    figures["ways"].append(line("static engine, layers called whole (unfused)", t, tokens))
    figures["fused_equals_unfused"] = sum(a == b for a, b in zip(mine, unfused))
    print(f"token-identical answers, fused vs unfused step: {figures['fused_equals_unfused']}/{len(prompts)}", flush=True)
    del whole
    if bw:
        lengths = [len(p) for p in prompts]
        plan = [[lengths[i] for i in b] for b in engine._plan(lengths, args.new_tokens, None)]
        for label, batches in (("one batch of all", [lengths]), (f"our batches {sizes}", plan),
                               (f"batches of {args.hf_batch}", [[lengths[i] for i in b] for b in plan_batches(lengths, args.hf_batch)])):
            bound = bandwidth_bound(model, batches, args.new_tokens, bw)
            print(f"bandwidth bound ({bw / 1e12:.2f} TB/s), {label}: {bound:.2f} s", flush=True)
            figures.setdefault("bounds", {})[label] = round(bound, 2)

    suite: list[list[int]] = []
    if args.suite:
        rng = random.Random(args.seed + 1)
        triggered = [p + [rng.randrange(3, vocab) for _ in range(k)] for k in TRIGGER_TOKENS for p in prompts]
        suite = prompts + triggered
        engine.batch_sizes = []
        with Timer(dev) as t:
            ours(engine, suite, args.new_tokens)
        figures["ways"].append(line(f"static engine, suite workload ({len(suite)} prompts)", t, len(suite) * args.new_tokens,
                                    f"batches {engine.batch_sizes}"))

    run_hf = not args.skip_hf
    if args.gpus > 1:  # frees this process's GPU for the workers, so transformers generate is not timed
        single = {w["way"]: w["seconds"] for w in figures["ways"]}
        del engine, model
        torch.cuda.empty_cache()
        figures["ways"].append(multi_gpu_line(f"static engine on {args.gpus} GPUs", args, prompts,
                                              single["safety-gate static engine (again)"]))
        if args.suite:
            figures["ways"].append(multi_gpu_line(f"suite workload on {args.gpus} GPUs", args, suite,
                                                  single[f"static engine, suite workload ({len(suite)} prompts)"]))
        run_hf = False

    if run_hf:
        with Timer(dev) as t:
            reference = hf_generate(model, prompts, args.new_tokens, args.hf_batch, dev)
        figures["ways"].append(line(f"transformers generate, sorted batches of {args.hf_batch}", t, tokens))
        same = sum(a == b for a, b in zip(mine, reference))
        first_diff = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a)) for a, b in zip(mine, reference)]
        print(f"token-identical answers, ours vs transformers: {same}/{len(prompts)}; mean first differing token "
              f"{sum(first_diff) / len(first_diff):.1f} of {args.new_tokens}", flush=True)
        figures["identical"] = same
        figures["mean_first_difference"] = round(sum(first_diff) / len(first_diff), 1)
        sample = prompts[: args.loop_sample]
        with Timer(dev) as t:
            hf_generate(model, sample, args.new_tokens, 1, dev)
        extrapolated = t.seconds * args.prompts / len(sample)
        print(f"{'per-prompt loop (paper), extrapolated':<44} {extrapolated:8.1f} s  ({len(sample)} prompts timed: "
              f"{t.seconds:.1f} s)", flush=True)
        figures["ways"].append({"way": "per-prompt loop, extrapolated", "seconds": round(extrapolated, 1)})
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
