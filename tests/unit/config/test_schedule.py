"""Refresh schedules: every N steps, or ranges with their own intervals."""

import pytest

from rag_e2e.errors import ConfigError
from rag_e2e.schedule import RefreshSchedule


def test_every_n_steps():
    s = RefreshSchedule.parse("250")
    assert [x for x in range(1001) if s.due(x)] == [250, 500, 750, 1000]
    assert (s.last_due(0), s.last_due(249), s.last_due(260)) == (0, 0, 250)


def test_ranges_switch_interval_at_the_boundary():
    s = RefreshSchedule.parse("0-1000:250, 1000-:1000")
    assert [x for x in range(3001) if s.due(x)] == [250, 500, 750, 1000, 2000, 3000]
    assert s.last_due(1999) == 1000 and s.last_due(999) == 750 and s.last_due(3500) == 3000


def test_gap_between_ranges_has_no_refresh():
    s = RefreshSchedule.parse("0-100:10,500-:100")
    assert not any(s.due(x) for x in range(100, 500)) and s.due(500) and s.due(600)


@pytest.mark.parametrize("text", ["", "abc", "0-100", "0-100:0", "100-50:10", "0-:10,5-:10", "0-100:10,50-:5"])
def test_malformed_schedules_name_the_key(text):
    with pytest.raises(ConfigError, match="refresh.schedule"):
        RefreshSchedule.parse(text, key="refresh.schedule")
