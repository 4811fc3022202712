"""The cost-aware factor: expected GPU-hours, smoothed Elo per training, value per GPU-hour in 0..1."""

from __future__ import annotations

from dataclasses import asdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.core.boards import BOARDS
from coordinator.scheduling.cost import (
    BoardGpuHours,
    CostSettings,
    estimate,
    expected_gpu_hours,
    smoothed_elo_per_training,
    value_factor,
)

S = CostSettings()


def test_expected_hours_use_the_board_default_before_any_history():
    assert expected_gpu_hours([], "square19", S) == S.board_default_gpu_hours.square19 == 20.0
    assert expected_gpu_hours([], "hex8", S) == S.board_default_gpu_hours.hex8
    with pytest.raises(ValueError, match="octagon"):
        expected_gpu_hours([], "octagon", S)


def test_every_board_has_a_default():
    assert set(asdict(S.board_default_gpu_hours)) == set(BOARDS)


def test_expected_hours_are_the_mean_of_the_recent_trainings_only():
    s = CostSettings(duration_window=3)
    assert expected_gpu_hours([100.0, 2.0, 3.0, 4.0], "square8", s) == pytest.approx(3.0)
    assert expected_gpu_hours([0.0, 2.0], "square8", s) == pytest.approx(2.0)  # a 0-hour record is no evidence


def test_without_gains_the_prior_makes_every_board_equal_per_gpu_hour():
    cheap = estimate([], [], "hex8", S)
    dear = estimate([], [], "hexagonal", S)
    assert cheap.elo_per_training == pytest.approx(S.prior_elo_per_gpu_hour * cheap.expected_gpu_hours)
    assert cheap.value_per_gpu_hour == pytest.approx(dear.value_per_gpu_hour) == pytest.approx(
        S.prior_elo_per_gpu_hour)
    assert cheap.factor == pytest.approx(dear.factor)


def test_one_lucky_training_is_shrunk_towards_the_prior_and_evidence_wins_over_time():
    hours = 1.0
    one = smoothed_elo_per_training([200.0], hours, S)
    many = smoothed_elo_per_training([200.0] * 8, hours, S)
    assert S.prior_elo_per_gpu_hour * hours < one < many < 200.0
    assert many == pytest.approx((8 * 200.0 + S.prior_trainings * 10.0) / (8 + S.prior_trainings))


def test_only_the_recent_gains_count():
    s = CostSettings(gain_window=2, prior_trainings=1e-9)
    assert smoothed_elo_per_training([1000.0, 5.0, 5.0], 1.0, s) == pytest.approx(5.0)


def test_the_same_gain_is_worth_more_on_a_cheaper_training():
    gains = [30.0, 25.0, 40.0]
    cheap = estimate([0.75, 0.8], gains, "square8", S)
    dear = estimate([20.0, 22.0], gains, "square19", S)
    assert cheap.factor > dear.factor
    assert "Elo per GPU-h" in cheap.why()


def test_regressing_configs_get_no_value():
    assert estimate([1.0], [-80.0, -90.0, -70.0], "square8", S).factor == 0.0


@given(st.floats(-100, 1000), st.floats(-100, 1000))
def test_the_factor_is_monotonic_and_bounded(a, b):
    lo, hi = sorted((a, b))
    assert 0.0 <= value_factor(lo, S) <= value_factor(hi, S) < 1.0


def test_the_factor_is_one_half_at_the_scale():
    assert value_factor(S.value_scale, S) == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [{"value_scale": 0}, {"duration_window": 0}, {"prior_elo_per_gpu_hour": -1},
                                 {"board_default_gpu_hours": BoardGpuHours(square8=0.0)}])
def test_settings_reject_numbers_that_break_the_factor(bad):
    with pytest.raises(ValueError):
        CostSettings(**bad)
