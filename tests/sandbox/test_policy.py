from pathlib import Path

import pytest

from sandbox.durations import format_duration, parse_duration
from sandbox.errors import PolicyError
from sandbox.policy import Policy, available_policies, load_policy


def test_all_shipped_policies_load_and_deny_by_default() -> None:
    assert {"default", "train", "gpu", "strict"} <= set(available_policies())
    for name in available_policies():
        policy = load_policy(name)
        assert policy.network == "none"
        assert policy.read_only_rootfs
        assert policy.user.split(":")[0] != "0"


def test_default_policy_is_one_cpu_two_gib_short_timeout() -> None:
    policy = load_policy("default")
    assert policy.cpus == 1
    assert int(policy.memory) == 2 * 1024**3
    assert policy.timeout <= 120


def test_gpu_policy_asks_for_a_gpu() -> None:
    assert load_policy("gpu").gpu_count == 1


def test_unknown_policy_names_the_choices() -> None:
    with pytest.raises(PolicyError, match="use one of: default"):
        load_policy("no-such-policy")


def test_bad_field_is_named_with_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("cpus: 1\nmemory: lots\n")
    with pytest.raises(PolicyError) as info:
        load_policy(bad)
    message = str(info.value)
    assert str(bad) in message and "'memory'" in message and "\n" not in message


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text("cpu: 2\n")
    with pytest.raises(PolicyError, match="field 'cpu'"):
        load_policy(bad)


def test_root_user_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "root.yaml"
    bad.write_text("user: '0:0'\n")
    with pytest.raises(PolicyError, match="root is not allowed"):
        load_policy(bad)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("cpus: [1\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(bad)


def test_policy_is_frozen() -> None:
    policy = Policy()
    with pytest.raises(ValueError):
        policy.cpus = 4  # type: ignore[misc]


def test_overrides_are_validated() -> None:
    assert Policy().with_overrides(timeout="2m").timeout == 120
    with pytest.raises(ValueError):
        Policy().with_overrides(gpus=-1)


def test_data_mount_target_cannot_shadow_the_workspace() -> None:
    with pytest.raises(ValueError, match="reserved"):
        Policy.model_validate({"data_mounts": [{"source": "/srv/data", "target": "/workspace"}]})


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("2h", 7200), ("1h30m", 5400), ("45", 45), ("250ms", 0.25)]
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "h", "1h30", "-5m", "0s", "m30"])
def test_bad_durations_name_the_fix(text: str) -> None:
    with pytest.raises(ValueError, match="like 90s"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    assert format_duration(5400) == "1h30m"
    assert parse_duration(format_duration(3725)) == 3725
