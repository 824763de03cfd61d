"""Bad numbers on the command line: one clear line and exit 2, before anything starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from orchestrator.cli import NUMBERS, app

BAD = [
    ("--thinking-tokens", "-1"),
    ("--thinking-tokens", "100"),
    ("--max-rounds", "0"),
    ("--max-rounds", "-2"),
    ("--budget", "0"),
    ("--budget", "-5"),
    ("--budget", "nan"),
    ("--max-experiments", "-1"),
    ("--max-cost-usd", "0"),
    ("--max-cost-usd", "-1"),
    ("--slots", "0"),
    ("--slots", "-1"),
    ("--baseline-runs", "0"),
    ("--baseline-runs", "-1"),
    ("--min-delta", "-0.01"),
    ("--startup-grace-s", "-1"),
    ("--eval-timeout-s", "0"),
    ("--backoff-s", "0"),
    ("--stall-s", "0"),
    ("--stall-s", "-1"),
    ("--memory-mb", "0"),
    ("--memory-mb", "-100"),
    ("--seed", "-1"),
    ("--false-keep", "0"),
    ("--false-keep", "0.5"),
    ("--min-pairs", "0"),
    ("--max-pairs", "0"),
    ("--futility-t", "-1"),
    ("--cpu-tolerance", "1.5"),
    ("--cpu-tolerance", "-0.1"),
    ("--remeasure-every", "-1"),
    ("--max-unfair", "-1"),
    ("--parallel", "0"),
    ("--parallel", "-1"),
]


def one_line_error(result, flag: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag} must be "), lines


def test_every_numeric_option_of_start_is_covered():
    numeric = {o.opts[0]: o.name for o in app.commands["start"].params if o.type.name in ("integer", "float")}
    assert set(numeric.values()) == set(NUMBERS), "a numeric option of start needs a rule in NUMBERS and a case here"
    assert {flag for flag, _ in BAD} == set(numeric)


def test_start_has_an_option_for_every_setting_and_every_threshold():
    """`start`'s options are generated from `Settings` and `Policy`: each field once, with its documented help."""
    from dataclasses import fields

    from orchestrator.campaign.policy import Policy
    from orchestrator.config import Settings

    params = {o.name: o for o in app.commands["start"].params}
    for f in fields(Settings):
        if f.metadata["option"]:
            assert f.metadata["help"] and params[f.name].help.startswith(f.metadata["help"][:40]), f.name
        else:
            assert f.name not in params, f"{f.name} is not an option of start"
    for name, text in Policy.help().items():
        assert params[name].help == f"keep rule: {text}"
    assert params["budget_s"].opts == ["--budget"], "flags people and service units already use keep their names"


@pytest.mark.parametrize(("flag", "value"), BAD)
def test_start_refuses(tmp_path, flag, value):
    args = ["start", "--program", "model", "--tag", "x", flag, value, "--foreground", "--state-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    one_line_error(result, flag)
    assert not (tmp_path / "experiments.db").exists(), "nothing started"


@pytest.mark.parametrize(("flag", "value"), BAD)
def test_service_install_refuses(tmp_path, monkeypatch, flag, value):
    monkeypatch.setenv("HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["service", "install", "--program", "model", "--tag", "x", flag, value])
    one_line_error(result, flag)
    assert not any(tmp_path.rglob("arx-model-x*")), "no unit written"


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--thinking-tokens", "0"), ("--thinking-tokens", "1024"), ("--max-experiments", "0"), ("--min-delta", "0")],
)
def test_edges_that_are_valid(tmp_path, monkeypatch, flag, value):
    monkeypatch.setenv("HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["service", "install", "--program", "model", "--tag", "x", flag, value])
    assert result.exit_code == 0 and "wrote" in result.output, result.output


def test_service_install_refuses_an_unknown_option(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["service", "install", "--program", "model", "--tag", "x", "--budgte", "60"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("error: No such option '--budgte'")
