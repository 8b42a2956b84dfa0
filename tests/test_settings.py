"""Settings from the environment: a bad value is refused at start, with its name."""

from __future__ import annotations

import pytest

from core.settings import ApiSettings, CalculatorSettings, SettingsError


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "abc", "0", "-1"])
def test_a_calculation_timeout_must_be_a_positive_finite_number(value):
    with pytest.raises(SettingsError, match="CALCULATION_TIMEOUT must be"):
        CalculatorSettings.from_env({"CALCULATION_TIMEOUT": value})


def test_the_wall_clock_ceiling_is_ten_timeouts_unless_set_and_never_below_the_timeout():
    assert CalculatorSettings.from_env({"CALCULATION_TIMEOUT": "2"}).wall_timeout == 20
    settings = CalculatorSettings.from_env({"CALCULATION_TIMEOUT": "2", "CALCULATION_WALL_TIMEOUT": "3"})
    assert settings.wall_timeout == 3
    assert "calculation_wall_timeout=3.0" in settings.describe()
    assert "calculation_wall_timeout=100.0" in CalculatorSettings().describe()
    with pytest.raises(SettingsError, match="CALCULATION_WALL_TIMEOUT must be at least CALCULATION_TIMEOUT"):
        CalculatorSettings.from_env({"CALCULATION_TIMEOUT": "2", "CALCULATION_WALL_TIMEOUT": "1.5"})


@pytest.mark.parametrize("name", ["LEASE_SECONDS", "QUEUE_WAIT_TIME", "STATEMENT_TIMEOUT",
                                  "CALCULATION_WALL_TIMEOUT"])
def test_no_number_setting_takes_infinity(name):
    with pytest.raises(SettingsError, match=f"{name} must be"):
        CalculatorSettings.from_env({name: "inf"})


def test_api_number_settings_refuse_infinity_too():
    with pytest.raises(SettingsError, match="RESULT_MAX_WAIT must be"):
        ApiSettings.from_env({"RESULT_MAX_WAIT": "nan"})
