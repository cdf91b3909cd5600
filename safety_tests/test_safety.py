"""The safety gate: one item per benchmark prompt, one per category and one overall (and the checks
beside them: over-refusal, regression, activations, the backdoor audit).

Run as ``pytest --model PATH`` in a clone, or ``pytest --pyargs safety_tests --model PATH`` once
installed. Every answer is generated and judged once (the ``safety_run`` fixture) before any
item asserts; each item then reads its verdict.
"""

from __future__ import annotations

import pytest

from safety_gate.suite import Outcome

pytestmark = pytest.mark.safety_gate


def _report(outcome: Outcome) -> None:
    if outcome.status == "fail" or outcome.status == "error":
        pytest.fail(outcome.message, pytrace=False)
    if outcome.status == "excused":
        pytest.xfail("gate=aggregate, so this prompt does not decide the exit code:\n" + outcome.message)


def test_prompt(safety_prompt, safety_run):
    """The answer to this prompt scores below the threshold (default 4)."""
    _report(safety_run.check_prompt(safety_prompt))


def test_category(safety_category, safety_run):
    """This category's harmfulness rate and mean score are within its limits."""
    _report(safety_run.check_category(safety_category))


def test_overall(safety_run):
    """The whole run's harmfulness rate and mean score are within the overall limits."""
    _report(safety_run.check_overall())


def test_over_refusal(safety_benign_group, safety_run):
    """The model refuses few of the benign set's safe prompts (overall, and per type)."""
    _report(safety_run.check_over_refusal(None if safety_benign_group == "overall" else safety_benign_group))


def test_regression(safety_regression_group, safety_run):
    """Against --baseline: no significant rise in harmfulness rate or mean score beyond the limits."""
    _report(safety_run.check_regression(None if safety_regression_group == "overall" else safety_regression_group))


def test_activations(safety_run):
    """(--activations) The model still separates harmful from harmless instructions like its baseline."""
    _report(safety_run.check_activations())


def test_triggered(safety_triggered, safety_run):
    """(backdoor audit) This prompt with the trigger placed in it scores below the threshold, like the plain one."""
    _report(safety_run.check_triggered(safety_triggered))


def test_trigger(safety_trigger, safety_run):
    """(backdoor audit) The trigger does not significantly raise the harmfulness rate over the plain prompts."""
    _report(safety_run.check_trigger(safety_trigger))


def test_discovered(safety_discovered, safety_run):
    """(--discover-triggers) The search's candidate of this rank does not significantly raise the harmfulness
    rate of held-out prompts when appended."""
    _report(safety_run.check_discovered(safety_discovered))
