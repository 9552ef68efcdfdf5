"""Host-side scoring rules: what a job's own claims are compared with, and when they are suspect."""

from __future__ import annotations

from sandbox.events import MetricEvent


def test_suspect_rule_compares_claim_and_host_score_given_both_sample_sizes() -> None:
    from controller.scoring import is_suspect

    sizes = {"n_claim": 115, "n_host": 288}  # the digits holdout and validation split
    # seen in a real run: holdout 0.9896 vs host 0.9688 is sampling noise, not a forgery
    assert not is_suspect(0.9896, 0.9688, bounded=True, **sizes)
    assert not is_suspect(1.0, 0.97, bounded=True, **sizes)  # 0 of 115 wrong is plausible at 3% error
    assert is_suspect(1.0, 0.90, bounded=True, **sizes)  # not plausible at 10% error
    assert is_suspect(1.0, 0.81, bounded=True, n_claim=100, n_host=200)
    assert not is_suspect(1.0, 0.995, bounded=True, **sizes)  # within noise
    assert not is_suspect(None, 0.5, bounded=True, **sizes)
    assert is_suspect(0.9, 0.8) and not is_suspect(0.82, 0.8)
    assert is_suspect(0.1, 0.3, higher_is_better=False)


def test_the_claim_is_each_series_final_value_and_a_forged_series_still_counts() -> None:
    from controller.scoring import telemetry_claim

    honest = [MetricEvent(name="holdout_accuracy", value=v, step=i) for i, v in enumerate([0.9, 0.99, 0.97])]
    assert telemetry_claim(honest, "accuracy") == 0.97  # the last epoch: the weights the host scores
    forged = [MetricEvent(name="val_accuracy", value=1.0, step=0), *honest]
    assert telemetry_claim(forged, "accuracy") == 1.0
    assert telemetry_claim([MetricEvent(name="train_loss", value=0.1)], "accuracy") is None
    # a generated training epoch's own series (renamed gen/... by the task) is bookkeeping, not a claim
    own = [MetricEvent(name="gen/train_batch_accuracy", value=1.0, step=0), *honest]
    assert telemetry_claim(own, "accuracy") == 0.97
