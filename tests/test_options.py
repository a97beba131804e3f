"""Options declared once: every command's options come from its config's fields (name, default, bounds, help),
and a config checks its own values when it is made."""

from __future__ import annotations

import dataclasses
import math

import click
import pytest

from edgecls.cli import cli
from edgecls.cli.options import Checked, cli_fields
from edgecls.core import config, device_config
from edgecls.core.errors import EdgeclsError
from edgecls.core.options import field_help, flag_of, kinds, spec_of

# command -> (config classes whose CLI fields it offers, its own options that are not settings of a stage)
COMMANDS = {
    ("train",): ([config.TrainConfig], {"data", "resume", "worker_dir", "force"}),
    ("prune",): ([config.PruneConfig], {"run"}),
    ("export",): ([config.ExportConfig], {"run", "mode"}),
    ("parity",): ([config.ParityConfig], {"run", "model"}),
    ("camera",): ([device_config.CameraConfig], set()),
    ("collect",): ([device_config.CollectConfig], {"out"}),
    ("bench",): ([device_config.BenchConfig, device_config.SshConfig], {"models", "remote", "venv"}),
    ("verify",): ([device_config.VerifyConfig], {"model"}),
    ("deploy",): ([device_config.DeployConfig, device_config.SshConfig], {"source", "target"}),
    ("report",): ([config.ReportConfig], {"run"}),
    ("explain",): ([config.ExplainConfig], {"run", "images"}),
}


def _command(path: tuple[str, ...]) -> click.Command:
    cmd = cli
    for name in path:
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("path", list(COMMANDS), ids=[" ".join(p) for p in COMMANDS])
def test_every_option_of_a_command_is_a_config_field_with_its_default_bounds_and_help(path):
    classes, own = COMMANDS[path]
    params = {p.name: p for p in _command(path).params if p.name != "help"}
    expected = {name for cls in classes for name in cli_fields(cls)}
    # Nothing spelled a second time: every option is a field, or one of the command's own few.
    assert set(params) - expected <= own, set(params) - expected - own
    for cls in classes:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in cli_fields(cls):
            if cls is config.ExportConfig and name == "mode":
                continue  # one flag per mode (--int8 ...), checked below
            assert name in params, f"{path}: {cls.__name__}.{name} has no option"
            p, f, spec = params[name], fields[name], spec_of(fields[name])
            assert flag_of(f) in p.opts, (name, p.opts)
            assert p.help.startswith(field_help(cls, name)) and p.help, name  # (backbone adds the registry's names)
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if not p.required:
                shown = ",".join(map(str, default)) if kinds(cls)[name].base == "ints" else default
                assert p.default == shown or (p.default is None and default is None), (name, p.default, default)
            if isinstance(p.type, Checked):
                assert p.type.spec == spec and p.type.kind == kinds(cls)[name]
            elif spec.choices:
                assert tuple(p.type.choices) == spec.choices


def test_export_offers_one_flag_per_mode_from_the_config():
    params = {p.opts[0]: p for p in _command(("export",)).params if p.name == "mode"}
    assert sorted(flag[2:] for flag in params) == sorted(spec_of(
        next(f for f in dataclasses.fields(config.ExportConfig) if f.name == "mode")).choices)


@pytest.mark.parametrize("cls", [config.TrainConfig, config.PruneConfig, config.ExportConfig, config.ParityConfig,
                                 config.ReportConfig, config.ExplainConfig, device_config.CameraConfig,
                                 device_config.CollectConfig, device_config.BenchConfig, device_config.VerifyConfig,
                                 device_config.SshConfig])
def test_defaults_are_valid_and_every_bound_is_enforced_when_a_config_is_made(cls):
    """Every numeric field: its default is inside its bounds, and just outside them, nan and inf are refused."""
    cls()  # the defaults
    for f in dataclasses.fields(cls):
        spec, kind = spec_of(f), kinds(cls)[f.name]
        if kind.base not in ("int", "float", "ints"):
            continue
        bad = [math.nan, math.inf, -math.inf] if kind.base == "float" else []
        if spec.low is not None:
            bad.append(spec.low if spec.low_open else spec.low - 1)
        if spec.high is not None:
            bad.append(spec.high if spec.high_open else spec.high + 1)
        for value in bad:
            v = (int(value),) if kind.base == "ints" else (int(value) if kind.base == "int" else value)
            with pytest.raises(EdgeclsError, match=rf"^{flag_of(f)} must be "):
                cls(**{f.name: v})


def test_choices_and_types_are_enforced_too():
    with pytest.raises(EdgeclsError, match=r"^--cache must be one of auto, memory, disk, none, got 'ram'$"):
        config.TrainConfig(cache="ram")
    with pytest.raises(EdgeclsError, match=r"^--epochs must be an integer between 1 and 10000, got 2.5$"):
        config.TrainConfig(epochs=2.5)
    with pytest.raises(EdgeclsError, match=r"^--augment must be true or false, got 'yes'$"):
        config.TrainConfig(augment="yes")
    with pytest.raises(EdgeclsError, match=r"^--port must be an integer between 1 and 65535, got 0$"):
        device_config.DeployConfig(ssh=device_config.SshConfig(port=0))  # a nested config is checked with its parent


def test_a_saved_config_with_older_names_reads_back_under_todays():
    cfg = device_config.CameraConfig.from_dict({"model": "m.tflite", "mqtt_stats_interval_s": 5.0, "log_interval_s": 2.0,
                                         "stall_timeout_s": 0.0, "no_such_option": 1})
    assert (cfg.mqtt_stats_interval, cfg.log_interval, cfg.stall_timeout) == (5.0, 2.0, 0.0)
    assert config.TrainConfig.from_dict({"early_stopping_patience": 7}).patience == 7
