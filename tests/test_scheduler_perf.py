"""The performance model's matmul rate by row count: formula or measured points."""

from __future__ import annotations

import pytest

from coordinator.scheduler.options import AllocateOptions
from coordinator.scheduler.perf import PerfModel, interpolate_log
from coordinator.scheduler.presets import model_preset
from parallax.errors import InvalidArgument

POINTS = ((1.0, 0.04), (8.0, 0.16), (64.0, 0.64))


def test_interpolation_is_linear_in_log_rows_and_flat_past_the_ends() -> None:
    assert interpolate_log(POINTS, 0.5) == 0.04
    assert interpolate_log(POINTS, 1.0) == 0.04
    assert interpolate_log(POINTS, 8.0) == pytest.approx(0.16)
    assert interpolate_log(POINTS, 2.0) == pytest.approx(0.08)  # a third of the way in log
    assert interpolate_log(POINTS, 16.0) == pytest.approx(0.32)
    assert interpolate_log(POINTS, 1000.0) == 0.64


def test_measured_points_replace_the_half_rows_formula() -> None:
    spec = model_preset("llama3-8b")
    formula = PerfModel.of(spec, AllocateOptions(matmul_half_rows=32.0))
    measured = PerfModel.of(spec, AllocateOptions(matmul_half_rows=32.0, matmul_row_rates=POINTS))
    assert formula.gemm_rate(1e12, 8.0) == pytest.approx(1e12 * 8 / 40)
    assert measured.gemm_rate(1e12, 8.0) == pytest.approx(1e12 * 0.16)
    assert measured.gemm_rate(1e12, 2.0) < measured.gemm_rate(1e12, 4.0)


@pytest.mark.parametrize(
    "points",
    [((8.0, 0.2), (4.0, 0.3)), ((1.0, 0.0),), ((0.5, 0.1),), ((1.0, 1.5),)],
)
def test_bad_points_are_refused_with_the_rule(points) -> None:
    with pytest.raises(InvalidArgument, match="matmul_row_rates"):
        AllocateOptions(matmul_row_rates=points)
