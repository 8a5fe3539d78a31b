"""The current windows read in this process: the serving prediction log, streamed."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`
