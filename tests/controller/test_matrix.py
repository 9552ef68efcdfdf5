"""The experiment matrix as pure functions: expansion and shrinking to a budget."""

from __future__ import annotations

from controller.agents.offline import LIBRARY, OfflineAgent
from controller.matrix import baseline_arm, expand, grid_points, novelty_arm, shrink_to_budget, task_defaults
from controller.plan import Matrix, ModuleCode
from controller.tasks import load_task

TASK = load_task("digits")


def _novelty() -> tuple:  # type: ignore[type-arg]
    agent = OfflineAgent()
    hypothesis = agent.plan(TASK, [0, 1, 2]).hypotheses[0]
    modules = {slot: agent.write_module(TASK, slot, hypothesis) for slot in hypothesis.modules}
    return hypothesis, modules, novelty_arm(TASK, hypothesis, modules)


def test_the_declared_matrix_expands_deterministically() -> None:
    hypothesis, _, novelty = _novelty()
    matrix = Matrix(variants={"width": [32, 64]}, ablate=["optimizer", "head"])
    suites = {"head": {n: ModuleCode(slot="head", code=c, origin=f"suite:{n}") for n, c in TASK.suite_code("head").items()}}
    first = [a.name for a in expand(TASK, hypothesis, novelty, matrix, suites)]
    assert first == [a.name for a in expand(TASK, hypothesis, novelty, matrix, suites)]  # deterministic
    assert first[:4] == ["baseline", "novelty:shift-mlp", "ablation:shift-mlp-no-augment", "ablation:shift-mlp-no-head"]
    assert "ablation:shift-mlp-optimizer=sgd" in first and "ablation:shift-mlp-optimizer=adamw" in first
    # the head suite: bn_mlp is new; the suite's mlp is the novelty's own head, so deduplicated
    assert "ablation:shift-mlp-head=bn_mlp" in first and "ablation:shift-mlp-head=mlp" not in first
    assert "baseline@width=64" in first and "novelty:shift-mlp@width=64" in first
    assert "baseline@width=32" not in first  # the reference value is the plain arm
    assert len(first) == 7 * 2


def test_a_suite_member_that_failed_its_guard_gets_no_arm() -> None:
    hypothesis, _, novelty = _novelty()
    names = [a.name for a in expand(TASK, hypothesis, novelty, Matrix(ablate=["head"]), suites={})]
    assert not any("head=" in name for name in names)


def test_ablating_a_hyperparameter_restores_its_default() -> None:
    hypothesis = LIBRARY[1]  # wide-lr: hyperparameters only
    assert hypothesis.hyper
    novelty = novelty_arm(TASK, hypothesis, {})
    arms = {a.name: a for a in expand(TASK, hypothesis, novelty, Matrix())}
    for key in hypothesis.hyper:
        ablated = arms[f"ablation:{hypothesis.id}-no-{key}"]
        assert ablated.hyper[key] == baseline_arm(TASK).hyper[key]


def test_grid_points_cover_every_combination_in_a_fixed_order() -> None:
    points = grid_points({"lr": [0.1, 0.01], "width": [32, 64]})
    assert points == [
        {"lr": 0.1, "width": 32},
        {"lr": 0.1, "width": 64},
        {"lr": 0.01, "width": 32},
        {"lr": 0.01, "width": 64},
    ]


def test_shrinking_drops_ablations_last_first_and_never_the_core_arms() -> None:
    hypothesis, _, novelty = _novelty()
    arms = expand(TASK, hypothesis, novelty, Matrix(ablate=["optimizer"]))
    left = {arm.key: 3 for arm in arms}  # three seeds each still to run
    kept, dropped, estimate = shrink_to_budget(arms, left, per_job_s=10, available_s=60, parallel=1)
    assert estimate == len(arms) * 3 * 10
    assert [a.name for a in kept] == ["baseline", "novelty:shift-mlp"]  # exactly the 60s available
    assert dropped == [a.name for a in reversed(arms[2:])]
    kept, dropped, _ = shrink_to_budget(arms, left, per_job_s=10, available_s=10_000, parallel=1)
    assert kept == arms and dropped == []
    done = {arm.key: 0 for arm in arms}  # everything already ran: nothing to shrink
    assert shrink_to_budget(arms, done, per_job_s=10, available_s=0, parallel=1)[0] == arms


def test_every_library_module_renders_to_python_for_a_slot_the_task_declares() -> None:
    """The offline agent's ideas fill every new slot kind, and each template compiles."""
    agent = OfflineAgent()
    used: set[str] = set()
    for hypothesis in LIBRARY:
        for slot in hypothesis.modules:
            assert slot in TASK.slots, (hypothesis.id, slot)
            module = agent.write_module(TASK, slot, hypothesis)
            compile(module.code, f"{hypothesis.id}/{slot}.py", "exec")
            assert f"def {TASK.slots[slot].entry}(" in module.code
            used.add(slot)
    assert used == set(TASK.slots)  # every slot the task declares has at least one idea
    for slot in TASK.slots:
        compile(TASK.baseline_code(slot), f"baseline/{slot}.py", "exec")


def test_a_hypothesis_over_model_loss_and_optimizer_gets_one_ablation_per_slot() -> None:
    hypothesis = next(h for h in LIBRARY if h.id == "residual-smooth-sgd")
    modules = {slot: OfflineAgent().write_module(TASK, slot, hypothesis) for slot in hypothesis.modules}
    novelty = novelty_arm(TASK, hypothesis, modules, {**task_defaults(TASK), **hypothesis.hyper})
    arms = {arm.name: arm for arm in expand(TASK, hypothesis, novelty, Matrix())}
    base = arms["baseline"]
    assert set(arms) == {"baseline", "novelty:residual-smooth-sgd"} | {
        f"ablation:residual-smooth-sgd-no-{slot}" for slot in ("loss", "model", "optimizer")
    }
    for slot in ("loss", "model", "optimizer"):
        ablation = arms[f"ablation:residual-smooth-sgd-no-{slot}"]
        assert ablation.modules[slot] == base.modules[slot]  # this slot reverted to its baseline
        others = set(hypothesis.modules) - {slot}
        assert all(ablation.modules[o] == novelty.modules[o] for o in others)


def test_the_offline_follow_up_adds_label_smoothing_then_width_to_the_latest_success() -> None:
    from controller.agents.base import IterationOutcome

    agent = OfflineAgent()
    plan = agent.plan(TASK, [0, 1])
    base = next(h for h in LIBRARY if h.id == "noise-bnmlp")
    history = [IterationOutcome(iteration=1, hypothesis=base, supported=True)]
    smooth = agent.refine(TASK, plan, history)
    assert smooth is not None and smooth.id == "noise-bnmlp-smooth"
    assert smooth.modules == {**base.modules, "loss": "template:smooth eps=0.1"} and smooth.hyper == base.hyper
    history.append(IterationOutcome(iteration=2, hypothesis=smooth, supported=False))
    wide = agent.refine(TASK, plan, history)
    assert wide is not None and wide.id == "noise-bnmlp-w64" and wide.hyper == {"width": 64}
    assert "loss" not in wide.modules  # built on the latest success, not on the refuted follow-up
