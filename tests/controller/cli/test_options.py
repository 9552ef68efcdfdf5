"""Parsers for what users type: each error names the flag and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli.options import (
    ITERATION_LIMIT_FLAGS,
    check_agent,
    check_backend,
    check_executor,
    check_pretrained,
    check_seeds,
    parse_duration_arg,
    parse_gpus,
    parse_grid,
    parse_iteration_limits,
    parse_usd,
)
from controller.errors import BadInputError
from controller.ledger import IterationLimits


def test_durations_read_as_users_write_them() -> None:
    assert parse_duration_arg("1h30m", "--budget") == 5400
    with pytest.raises(BadInputError, match=r"^--budget: .*90s"):
        parse_duration_arg("soon", "--budget")


@pytest.mark.parametrize(("text", "usd"), [("5usd", 5.0), ("$5", 5.0), ("0.50usd", 0.5), ("2", 2.0)])
def test_dollar_amounts_read_as_users_write_them(text: str, usd: float) -> None:
    assert parse_usd(text, "--max-cost") == usd


@pytest.mark.parametrize("text", ["lots", "-1usd"])
def test_a_bad_amount_names_the_flag(text: str) -> None:
    with pytest.raises(BadInputError, match=r"^--max-cost: .*5usd"):
        parse_usd(text, "--max-cost")


def test_a_grid_keeps_numbers_as_numbers() -> None:
    assert parse_grid("lr=0.003,0.006;arch=cnn,resnet18", "--matrix") == {
        "lr": [0.003, 0.006],
        "arch": ["cnn", "resnet18"],
    }
    with pytest.raises(BadInputError, match="--sweep"):
        parse_grid("lr", "--sweep")


def test_gpus_are_a_count_or_device_ids() -> None:
    assert parse_gpus("2") == 2
    assert parse_gpus("0,2") == [0, 2]
    assert parse_gpus(None) is None
    with pytest.raises(BadInputError, match="--gpus"):
        parse_gpus("all")
    for negative in ("-1", "0,-2"):
        with pytest.raises(BadInputError, match="--gpus"):
            parse_gpus(negative)


def test_a_dollar_cap_of_zero_is_refused_with_the_fix() -> None:
    for flag in ("--max-cost", "--iteration-cost"):
        with pytest.raises(BadInputError, match=r"before it starts; give an amount like 0\.5usd"):
            parse_usd("0usd", flag)


def test_a_grid_may_not_vary_what_the_loop_owns() -> None:
    assert parse_grid("lr=0.003,0.006;arch=cnn,resnet18", "--matrix") == {"lr": [0.003, 0.006], "arch": ["cnn", "resnet18"]}
    with pytest.raises(BadInputError, match="holdout_fraction is the loop's"):
        parse_grid("holdout_fraction=0,0.1", "--sweep")


def test_one_seed_is_refused_with_the_fix() -> None:
    with pytest.raises(BadInputError, match=r"--seeds 2 or more"):
        check_seeds(1)
    assert check_seeds(2) == [0, 1]


def test_iteration_limit_flags_cover_every_iteration_limit() -> None:
    assert set(ITERATION_LIMIT_FLAGS) == set(IterationLimits.model_fields)


def test_omitted_iteration_limits_are_not_stored() -> None:
    assert parse_iteration_limits() == {}
    assert parse_iteration_limits(tokens=5000) == {"tokens": 5000.0}


def test_every_iteration_limit_flag_is_stored_under_its_field() -> None:
    limits = parse_iteration_limits(wall="15m", gpu_time="1h", cost="0.5usd", tokens=5000, repairs=0, attempts=12)
    assert limits == {
        "wall_s": 900.0,
        "gpu_s": 3600.0,
        "cost_usd": 0.5,
        "tokens": 5000.0,
        "repairs_per_module": 0.0,
        "attempts": 12.0,
    }
    assert IterationLimits(**limits) == IterationLimits(
        wall_s=900, gpu_s=3600, cost_usd=0.5, tokens=5000, repairs_per_module=0, attempts=12
    )


@pytest.mark.parametrize(
    ("flag", "kwargs"),
    [
        ("--iteration-wall", {"wall": "soon"}),
        ("--iteration-gpu-time", {"gpu_time": "0s"}),
        ("--iteration-cost", {"cost": "lots"}),
        ("--iteration-cost", {"cost": "0"}),
        ("--iteration-tokens", {"tokens": 0}),
        ("--iteration-repairs", {"repairs": -1}),
        ("--iteration-attempts", {"attempts": 0}),
    ],
)
def test_a_bad_iteration_limit_names_its_flag(flag: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(BadInputError, match=rf"^{flag}: "):
        parse_iteration_limits(**kwargs)  # type: ignore[arg-type]


def test_a_flag_the_chosen_mode_would_ignore_is_refused_with_the_fix() -> None:
    with pytest.raises(BadInputError, match=r"^--model m is for --agent llm; add --agent llm, or leave out --model"):
        check_agent("offline", "m")
    with pytest.raises(BadInputError, match=r"^--allow-weaker is for --backend local"):
        check_backend("docker", allow_weaker=True)
    check_backend("local", allow_weaker=True)
    check_agent("llm", "m")


def test_a_typed_ray_address_needs_the_ray_executor_but_one_from_the_environment_is_let_be(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(BadInputError, match=r"^--ray-address is for --executor ray"):
        check_executor("local", "head:6379")
    check_executor("ray", "head:6379")
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")  # typer fills ray_address from it
    check_executor("local", "head:6379")


def test_pretrained_weights_need_a_resnet18_arm_and_a_torch_save_file(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"PK\x03\x04rest of a zip")
    with pytest.raises(BadInputError, match=r"^--pretrained holds resnet18 trunk weights; add --arch resnet18"):
        check_pretrained(weights, "cnn", None)
    check_pretrained(weights, "resnet18", None)
    check_pretrained(weights, "cnn", "arch=cnn,resnet18")
    weights.write_text("not weights")
    with pytest.raises(BadInputError, match=r"not a torch.save file"):
        check_pretrained(weights, "resnet18", None)
