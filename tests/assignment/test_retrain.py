"""The summary of retrained points: chosen by validation accuracy, test reported only."""

from __future__ import annotations

import pytest

from appmult_fx.assignment.retrain import retrain_summary


def _report(validation: float, test: float) -> dict:
    return {"validation_acc": validation, "initial_acc": 0.5, "final_acc": test}


def test_thresholds_are_chosen_by_validation_not_test_accuracy() -> None:
    """``cheap`` is within 0.5 point of the best uniform on test but 3 points below it on
    validation; ``mid`` is the other way round. Choosing must follow validation."""
    reports = {
        "best_uniform": _report(0.90, 0.90),
        "cheap": _report(0.87, 0.899),
        "mid": _report(0.899, 0.85),
    }
    energies = {"best_uniform": 1.0, "cheap": 0.3, "mid": 0.6}
    text, summary = retrain_summary(reports, energies, "best_uniform")
    for key in ("<= 0.5 points", "<= 1.0 points"):
        assert summary[key]["point"] == "mid"
        assert summary[key]["validation_after"] == 0.899
        assert summary[key]["test_after"] == 0.85  # reported, not used
    assert "accuracy loss allowed (validation, after retraining)" in text
    assert "test split is never used to choose" in text


def test_a_report_without_validation_accuracy_is_refused() -> None:
    reports = {"best_uniform": _report(0.9, 0.9), "p": {"initial_acc": 0.5, "final_acc": 0.9}}
    with pytest.raises(ValueError, match=r"\['p'\] have no validation accuracy"):
        retrain_summary(reports, {"best_uniform": 1.0, "p": 0.5}, "best_uniform")
