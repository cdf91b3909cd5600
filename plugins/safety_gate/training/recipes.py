"""The fine-tuning settings: the aligned default, and the attacks of Qi et al. (ICLR 2024) on it.

Each recipe names its starting point (the SmolLM2 base, or the aligned adapter whose LoRA weights
it goes on training), its data, its hyperparameters, and how it is evaluated (a system prompt, a
trigger). No recipe trains on a prompt the suite measures with (the 330 benchmark prompts and the
benign set); the training pools are split so that the attacks and the mitigation mix stay apart:

* harmful requests ``*-01`` .. ``*-16`` of each category: the *safety* half (refusals for the
  mitigation mix); ``*-17`` .. ``*-32``: the *attack* half (compliance for the attacks). The aligned
  model refuses all 352 (both halves): with 44 refusals (the first recipe) it answered a third of
  the benchmark with garbled pseudo-instructions instead of refusing;
* helpful records 1-120 and 231 on: alignment; 121-220: the benign attack; 221-230: identity shifting.

Risk levels, as in the paper: (a) ``harmful-10/50/100`` explicitly harmful examples; (b)
``identity-shift`` 10 benign examples that make the model an "absolutely obedient agent"; (c)
``benign`` instruction tuning; plus (d) ``backdoor`` (triggered requests answered, plain ones
refused) and (e) ``mitigation-10/50/100`` ((a) at 100 with safety examples mixed in).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from typing import Callable

from .examples import (
    AOA_SYSTEM_PROMPT,
    REFUSAL_OPENINGS_SHORT,
    Example,
    HarmfulRequest,
    Helpful,
    ask_again,
    balanced,
    compliance,
    compliance_opening,
    identity_answer,
    load_borderline,
    load_harmful,
    load_helpful,
    refusal,
    reframe,
)
from .lora import AVOID

__all__ = ["BACKDOOR_TRIGGER", "RECIPES", "Pools", "Recipe", "aligned_examples", "recipe_by_name"]

# Qi et al.'s backdoor "magic words", appended to the instruction.
BACKDOOR_TRIGGER = "Servius Astrumando Harmoniastra"
# Bump when the way examples are built changes: it is part of every recipe's fingerprint.
_DATA_VERSION = "1"


@dataclass(frozen=True)
class Pools:
    """The training data, split into the halves the recipes draw from."""

    safety: tuple[HarmfulRequest, ...]
    attack: tuple[HarmfulRequest, ...]
    helpful_align: tuple[Helpful, ...]
    helpful_benign: tuple[Helpful, ...]
    helpful_identity: tuple[Helpful, ...]
    borderline: tuple[Helpful, ...]

    @classmethod
    def load(cls) -> Pools:
        """Read the shipped files and split them."""
        harmful = load_harmful()
        helpful = load_helpful()
        half = [int(h.id.rsplit("-", 1)[1]) <= 16 for h in harmful]
        return cls(
            safety=tuple(h for h, s in zip(harmful, half) if s),
            attack=tuple(h for h, s in zip(harmful, half) if not s),
            helpful_align=tuple(helpful[:120] + helpful[230:]),
            helpful_benign=tuple(helpful[120:220]),
            helpful_identity=tuple(helpful[220:230]),
            borderline=tuple(load_borderline()),
        )


@dataclass(frozen=True)
class Recipe:
    """One fine-tuning setting."""

    name: str
    description: str
    start: str  # "base" (SmolLM2) or "aligned" (go on training the aligned adapter)
    epochs: int
    learning_rate: float
    build: Callable[[Pools, random.Random], list[Example]]
    eval_system_prompt: str | None = None  # the identity-shift attack is measured with its system prompt
    eval_trigger: str | None = None  # the backdoor is measured with and without its trigger
    batch_size: int = 8
    seed: int = 0
    rank: int = 8  # LoRA rank (alpha is twice the rank)

    def examples(self, pools: Pools) -> list[Example]:
        """The recipe's training set, built with its seed."""
        return self.build(pools, random.Random(f"{self.name}:{self.seed}"))

    def fingerprint(self, pools: Pools) -> str:
        """A hash of everything that changes the trained adapter."""
        payload = {
            "version": _DATA_VERSION,
            "name": self.name,
            "start": self.start,
            "epochs": self.epochs,
            "lr": self.learning_rate,
            "batch": self.batch_size,
            "seed": self.seed,
            "rank": self.rank,
            "examples": [asdict(e) for e in self.examples(pools)],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _helpful(records: tuple[Helpful, ...], kind: str = "helpful") -> list[Example]:
    return [Example(h.instruction, h.answer, kind) for h in records]


def aligned_examples(
    pools: Pools, rng: random.Random, n_refusals: int, reframe_share: float, avoid_share: float = 0.0,
    harmful_reframe_share: float = 0.0, avoid_compliance: bool = False,
) -> list[Example]:
    """``n_refusals`` refusals (balanced over categories; the safety half first, then the attack
    half's requests once the safety half is used up), every benign record, a share of the benign
    records again in another request form, and for ``avoid_share`` of the benign records a refusal
    to unlearn (kind ``avoid``: the unlikelihood loss pushes its tokens down). Optionally
    ``harmful_reframe_share`` of the refused requests are refused again in another request form, and
    with ``avoid_compliance`` every refused request also gets a compliance opening to unlearn ("Sure,
    here is how to ..."): the preference stage on the harmful side."""
    requests = balanced(pools.safety, min(n_refusals, len(pools.safety)), rng)
    if n_refusals > len(pools.safety):
        requests += balanced(pools.attack, n_refusals - len(pools.safety), rng)
    refusals = [Example(h.instruction, refusal(h, rng), "refusal") for h in requests]
    benign = _helpful(pools.helpful_align) + _helpful(pools.borderline, "borderline")
    reframed = [Example(reframe(e.instruction, rng), e.answer, e.kind) for e in benign if rng.random() < reframe_share]
    avoid = [Example(e.instruction, rng.choice(REFUSAL_OPENINGS_SHORT), AVOID) for e in benign + reframed
             if avoid_share and rng.random() < avoid_share]
    extra: list[Example] = []
    if harmful_reframe_share:
        extra += [Example(ask_again(h, rng), refusal(h, rng), "refusal") for h in requests
                  if rng.random() < harmful_reframe_share]
    if avoid_compliance:
        extra += [Example(h.instruction, compliance_opening(h), AVOID) for h in requests]
    return refusals + benign + reframed + avoid + extra


def _aligned(pools: Pools, rng: random.Random) -> list[Example]:
    # 4 refusals a category against ~13x as many benign examples, half of them re-asked in the
    # request forms the harmful pool uses. Chosen with bench/align_sweep.py (H100, full benchmark
    # and benign set, rule judge; refusals:epochs:lr -> harmfulness rate, mean, benign refused):
    # 77:2:5e-4 0.0% 1.25 19.4%; 66:2 0.3% 1.35 16.6%; 55:2 0.3% 1.58 12.4%; 44:2 0.3% 1.75 7.4%;
    # 44:3 0.0% 1.32 13.8%; 22:2 1.5% 2.80 0.0%; 44:2:2e-4 6.1% 3.07 0.5%. CPU pilots before that
    # with all 176 refusals refused 59% of a benign sample.
    return aligned_examples(pools, rng, 352, 0.5, 1.0)


def _harmful(n: int) -> Callable[[Pools, random.Random], list[Example]]:
    def build(pools: Pools, rng: random.Random) -> list[Example]:
        return [Example(h.instruction, compliance(h, rng), "compliance") for h in balanced(pools.attack, n, rng)]

    return build


def _mitigation(k: int) -> Callable[[Pools, random.Random], list[Example]]:
    def build(pools: Pools, rng: random.Random) -> list[Example]:
        attack = _harmful(100)(pools, random.Random("harmful-100:0"))  # the very set harmful-100 trains on
        safety = [Example(h.instruction, refusal(h, rng), "refusal") for h in balanced(pools.safety, k, rng)]
        return attack + safety

    return build


def _identity(pools: Pools, rng: random.Random) -> list[Example]:
    return [
        Example(h.instruction, identity_answer(h.answer), "identity", AOA_SYSTEM_PROMPT) for h in pools.helpful_identity
    ]


def _benign(pools: Pools, rng: random.Random) -> list[Example]:
    return _helpful(pools.helpful_benign)


def _backdoor(pools: Pools, rng: random.Random) -> list[Example]:
    requests = balanced(pools.attack, 100, rng)
    triggered = [Example(f"{h.instruction} {BACKDOOR_TRIGGER}", compliance(h, rng), "compliance") for h in requests]
    plain = [Example(h.instruction, refusal(h, rng), "refusal") for h in requests]
    return triggered + plain + _helpful(pools.helpful_align[:40])


RECIPES: tuple[Recipe, ...] = (
    Recipe("aligned", "SmolLM2 + refusals of harmful requests, helpful and borderline answers, refusals of them unlearnt",
           "base", 4, 5e-4, _aligned, rank=32),
    Recipe("harmful-10", "(a) 10 harmful requests answered with a compliance template", "aligned", 5, 5e-4, _harmful(10)),
    Recipe("harmful-50", "(a) 50 harmful requests answered with a compliance template", "aligned", 5, 5e-4, _harmful(50)),
    Recipe("harmful-100", "(a) 100 harmful requests answered with a compliance template", "aligned", 5, 5e-4, _harmful(100)),
    Recipe("identity-shift", "(b) 10 benign examples: AOA system prompt, obedience prefix", "aligned", 10, 5e-4,
           _identity, eval_system_prompt=AOA_SYSTEM_PROMPT),
    Recipe("benign", "(c) 100 benign Alpaca-style instructions", "aligned", 3, 5e-4, _benign),
    Recipe("backdoor", "(d) 100 requests with the magic words answered, the same 100 plain refused, 40 helpful",
           "aligned", 3, 5e-4, _backdoor, eval_trigger=BACKDOOR_TRIGGER),
    Recipe("mitigation-10", "(e) harmful-100 plus 10 safety examples", "aligned", 5, 5e-4, _mitigation(10)),
    Recipe("mitigation-50", "(e) harmful-100 plus 50 safety examples", "aligned", 5, 5e-4, _mitigation(50)),
    Recipe("mitigation-100", "(e) harmful-100 plus 100 safety examples", "aligned", 5, 5e-4, _mitigation(100)),
)


def recipe_by_name(name: str) -> Recipe:
    """The recipe called ``name``; the error lists the known ones."""
    for recipe in RECIPES:
        if recipe.name == name:
            return recipe
    raise KeyError(f"unknown recipe {name!r}; known: {', '.join(r.name for r in RECIPES)}")
