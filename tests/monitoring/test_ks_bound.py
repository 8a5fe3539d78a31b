"""The KS statistic read from bin counts (as Spark aggregates them) is within its stated bound."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from monitoring.statistics import bin_counts, ks_bound_from_counts

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


@pytest.mark.parametrize("grid", [5, 50, 500])
def test_the_ks_bound_holds_around_the_exact_statistic(grid: int) -> None:
    rng = np.random.default_rng(grid)
    for shift in (0.0, 0.05, 0.5):
        reference = np.sort(rng.normal(size=3000))
        current = np.sort(np.round(rng.normal(shift, 1.1, size=2000), 2))  # ties too
        pooled = np.sort(np.concatenate((reference, current)))
        edges = np.unique(np.quantile(pooled, np.arange(1, grid) / grid))

        d_grid, bound = ks_bound_from_counts(
            bin_counts(reference, edges), bin_counts(current, edges)
        )

        exact = stats.ks_2samp(reference, current).statistic
        assert d_grid <= exact + 1e-12
        assert exact <= d_grid + bound + 1e-12
        assert bound <= 2.5 / grid + 1e-12  # each bin holds about 1/grid of both samples
