"""The runner's configuration: presets that compose, a config file, values checked as typed."""

from __future__ import annotations

import json

import pytest

from experiments import config as config_lib


def test_presets_compose_left_to_right():
    composed, _ = config_lib.parse_args(["--logdir", "x", "--preset", "dreamerv3,size12m"])
    # dreamerv3-vision is dreamerv3 at size12m on pixels at train ratio 256.
    vision, _ = config_lib.parse_args(
        ["--logdir", "x", "--preset", "dreamerv3-vision", "--obs", "proprio"]
    )
    assert config_lib.diff(composed, vision) == {"run.train_ratio": 1024.0}
    assert composed.model.deter == 2048 and composed.dreamer.units == 256
    # A later full preset overrides only what it sets differently from the defaults.
    cpu_sized, _ = config_lib.parse_args(["--logdir", "x", "--preset", "dreamerv3-cpu,size1m"])
    assert cpu_sized == config_lib.PRESETS["dreamerv3-cpu"]()
    with pytest.raises(ValueError, match=r"unknown --preset 'size3m'.*size12m"):
        config_lib.parse_args(["--logdir", "x", "--preset", "dreamerv3,size3m"])
    with pytest.raises(ValueError, match=r"--preset dmc-proprio was renamed"):
        config_lib.parse_args(["--logdir", "x", "--preset", "dmc-proprio"])


def test_a_config_file_repeats_a_run(tmp_path):
    cfg, _ = config_lib.parse_args(["--logdir", "x", "--preset", "sac", "--seed", "7"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config_lib.to_dict(cfg)))  # as the runner writes it
    again, _ = config_lib.parse_args(["--logdir", "x", "--config", str(path)])
    assert again == cfg
    changed, _ = config_lib.parse_args(["--logdir", "x", "--config", str(path), "--seed", "8"])
    assert config_lib.diff(changed, cfg) == {"run.seed": 8}
    with pytest.raises(ValueError, match="use one"):
        config_lib.parse_args(["--logdir", "x", "--config", str(path), "--preset", "sac"])
    path.write_text('{"run": {"sede": 1}}')
    with pytest.raises(ValueError, match=r"--config .*no fields \['sede'\]"):
        config_lib.parse_args(["--logdir", "x", "--config", str(path)])
    with pytest.raises(ValueError, match="cannot read a JSON config"):
        config_lib.parse_args(["--logdir", "x", "--config", str(tmp_path / "missing.json")])


def test_a_retired_field_reads_as_its_neutral_value_or_is_refused(tmp_path):
    # model.carry_state (the 2023 code's carried training state, always reset by its replay)
    # is gone: a saved config that has it off reads as it was; on, it is refused with the
    # reason, before anything starts.
    data = config_lib.to_dict(config_lib.dreamerv3_2023())
    data["model"]["carry_state"] = False
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    cfg, _ = config_lib.parse_args(["--logdir", "x", "--config", str(path)])
    assert cfg == config_lib.dreamerv3_2023()
    data["model"]["carry_state"] = True
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"model\.carry_state=true is no longer a setting: .*h_0"):
        config_lib.parse_args(["--logdir", "x", "--config", str(path)])


def test_config_file_values_are_parsed_and_checked_as_the_command_line_s(tmp_path):
    path = tmp_path / "config.json"

    def load(**run):
        data = config_lib.to_dict(config_lib.debug())
        data["run"].update(run)
        path.write_text(json.dumps(data))
        return config_lib.parse_args(["--logdir", "x", "--config", str(path)])[0].run

    # A string is read as the command line reads it ('false' is False, not a true string).
    assert load(exact_resume="false").exact_resume is False
    assert load(exact_resume=True, steps="2e3").steps == 2000
    assert load(steps=3e3).steps == 3000 and load(train_ratio=32).train_ratio == 32.0
    for run, message in (
        ({"steps": 3.5}, r"run\.steps: 3\.5 is not an int"),
        ({"batch_size": [16]}, r"run\.batch_size: \[16\] is not an int"),
        ({"exact_resume": 1}, r"run\.exact_resume: 1 is not true or false"),
        ({"exact_resume": "maybe"}, r"cannot parse 'maybe' as bool"),
        ({"train_ratio": "inf"}, r"run\.train_ratio=inf; must be finite"),
    ):
        with pytest.raises(ValueError, match=message):
            load(**run)
    data = config_lib.to_dict(config_lib.debug())
    data["model"]["mults"] = [1, "2", 4, 8]  # tuple fields: each element by its type
    path.write_text(json.dumps(data))
    cfg, _ = config_lib.parse_args(["--logdir", "x", "--config", str(path)])
    assert cfg.model.mults == (1, 2, 4, 8)
    cfg, _ = config_lib.parse_args(["--logdir", "x", "--model.mults", "2,3,4,4"])
    assert cfg.model.mults == (2, 3, 4, 4)  # ints, not the strings '2', '3', ...


def test_a_saved_dm_control_time_limit_of_1000_resumes_as_the_tasks_own(cartpole_limits):
    # Runs saved before env.time_limit 0 meant "the task's own" say 1000: for a dm-control
    # task and a Gymnasium env registered with at most 1000 steps the same episodes, so they
    # resume; for an env registered with more (or none) 1000 was a real cap.
    from experiments.run.compat import check_config

    saved = config_lib.to_dict(config_lib.Config())
    saved["env"]["time_limit"] = 1000
    now = config_lib.to_dict(config_lib.Config())
    for task, same in (
        ("walker-walk", True),
        ("gym:Pendulum-v1", True),
        (cartpole_limits["long"], False),
    ):
        for d in (saved, now):
            d["env"]["task"] = task
        if same:
            check_config(config_lib.canonical(saved), config_lib.canonical(now))
        else:
            with pytest.raises(ValueError, match=r"env\.time_limit: saved 1000, current 0"):
                check_config(config_lib.canonical(saved), config_lib.canonical(now))


def test_a_saved_video_every_reads_as_retired() -> None:
    # Written before open-loop reports were counted in env steps (run.report_every): any value
    # of the old cadence in updates is dropped, so such a run resumes.
    data = config_lib.to_dict(config_lib.compose("debug"))
    del data["run"]["report_every"]
    data["run"]["video_every"] = 50
    cfg = config_lib.from_dict(data)
    assert cfg.run.report_every == config_lib.RunConfig().report_every


def test_image_size_and_gray_from_the_command_line_and_old_config_files(tmp_path):
    for flags in (["--env.size", "96,96"], ["--env.size", "96", "96"], ["--env.size=96"]):
        cfg, _ = config_lib.parse_args(["--logdir", "x", *flags, "--env.gray", "true"])
        assert cfg.env.size == (96, 96) and cfg.env.gray is True
    cfg, _ = config_lib.parse_args(["--logdir", "x", "--env.size", "64,96"])
    assert cfg.env.size == (64, 96) and cfg.env.gray is False  # height 64, width 96
    with pytest.raises(ValueError, match=r"--env\.size: 3 values \[96, 96, 3\]; expected 2"):
        config_lib.parse_args(["--logdir", "x", "--env.size", "96,96,3"])
    # Configs written when env.size was one int (a run's config.json) load as (n, n), and a run
    # saved so resumes against the current spelling.
    data = config_lib.to_dict(config_lib.dreamerv3_vision())
    data["env"]["size"] = 64
    del data["env"]["gray"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    cfg, _ = config_lib.parse_args(["--logdir", "x", "--config", str(path)])
    assert cfg.env.size == (64, 64) and cfg.env.gray is False
    assert cfg == config_lib.dreamerv3_vision()
    assert config_lib.from_dict({"env": {"size": "80"}}).env.size == (80, 80)
    from experiments.run.compat import check_config

    now = config_lib.canonical(config_lib.to_dict(config_lib.dreamerv3_vision()))
    # As RunSetup compares them: the saved config read back, then canonical.
    check_config(config_lib.canonical(config_lib.to_dict(config_lib.from_dict(data))), now)
    assert config_lib.canonical(data)["env"]["size"] == [64, 64] == now["env"]["size"]
    with pytest.raises(ValueError, match=r"env\.size: 3 values"):
        config_lib.from_dict({"env": {"size": [64, 64, 3]}})
