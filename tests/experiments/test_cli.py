"""The command line: --help showing the config a run starts from, the flag syntax, unknown
names answered with the closest ones, and what a run changed from its preset."""

from __future__ import annotations

import json
import re

import pytest

from experiments import config as config_lib
from experiments import train as train_lib
from experiments.config.schema import spell

METAVAR = r"(?:INT|FLOAT|STR|\{true,false\}|INT,\.\.\.|STR,\.\.\.)"


def _help(capsys, monkeypatch, argv: list[str]) -> tuple[str, str, dict[str, tuple[str, str]]]:
    """(the text before the options, the options as one line, dotted field -> (its help, its
    default)) of ``argv + ['--help']``."""
    monkeypatch.setenv("COLUMNS", "129")  # one column of option groups, few wrapped lines
    with pytest.raises(SystemExit) as info:
        config_lib.parse_args([*argv, "--help"])
    assert info.value.code == 0
    head, _, body = capsys.readouterr().out.partition("-h, --help")
    lines = [line.strip("│╭╮╰╯ ") for line in body.splitlines()]
    text = " ".join(line for line in lines if line.strip("-─"))  # group rules dropped
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"--\w+ \S+, (?=--)", "", text)  # '--task STR, --env.task STR' -> env.task
    rows = re.findall(rf"--([\w.]+) {METAVAR} (.*?) ?\(default: (.*?)\)", text)
    return head, text, {name: (note, default) for name, note, default in rows}


def test_help_shows_the_preset_a_run_starts_from(capsys, monkeypatch):
    head, text, rows = _help(capsys, monkeypatch, ["--preset", "sac"])
    assert "defaults below are those of --preset sac" in head
    assert "(default: sac)" in text and "--task STR, --env.task STR" not in text
    # sac's own values, not Config()'s (agent dreamer, batch 16 x 64, replay context 1).
    assert rows["agent"][1] == "sac"
    assert rows["run.batch_size"][1] == "256" and rows["run.batch_length"][1] == "2"
    assert rows["model.replay_context"][1] == "0" and rows["run.eval_episodes"][1] == "5"
    assert rows["env.task"][1] == "walker-walk" and rows["run.train_ratio"][1] == "512.0"
    assert rows["model.mults"][1] == "2,3,4,4" and rows["logging.tags"][1] == "''"
    assert rows["run.overlap"][1] == "true"
    # Every field, each with its comment and the preset's value as the command line writes it.
    sac = config_lib.sac()
    for name in config_lib.fields(config_lib.Config):
        note, default = rows[name]
        assert note, f"{name} has no comment in its dataclass"
        section, _, field = name.rpartition(".")
        value = getattr(getattr(sac, section) if section else sac, field)
        assert default == spell(value), name
    assert rows["model.deter"][0] == "GRU state size"


def test_help_without_a_preset_shows_debug_and_composed_presets_and_files_too(
    capsys, monkeypatch, tmp_path
):
    head, _, rows = _help(capsys, monkeypatch, [])
    assert "--preset debug" in head  # what a run without --preset trains
    assert rows["model.deter"][1] == "32" and rows["run.steps"][1] == "4000"
    _, _, rows = _help(capsys, monkeypatch, ["--preset", "dreamerv3,size12m"])
    assert rows["model.deter"][1] == "2048" and rows["dreamer.units"][1] == "256"
    cfg, _ = config_lib.parse_args(["--logdir", "x", "--preset", "sac", "--seed", "7"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config_lib.to_dict(cfg)))
    head, _, rows = _help(capsys, monkeypatch, ["--config", str(path)])
    assert f"--config {path}" in head
    assert rows["run.seed"][1] == "7" and rows["agent"][1] == "sac"


def test_flags_are_written_as_before():
    argv = ["--logdir", "x", "--run.batch-length", "8", "--run.batch_size=2", "--steps", "1e4"]
    argv += ["--run.overlap", "off", "--env.fast_render=true", "--logging.tags", "a,b"]
    argv += ["--model.mults=1,2", "--run.train_ratio", "-1e3", "--logging.entity", ""]
    with pytest.raises(ValueError, match=r"run\.train_ratio=-1000\.0; must be > 0"):
        config_lib.parse_args(argv)  # parsed (a negative float), then refused by validate
    cfg, args = config_lib.parse_args([*argv[:-4], "--no-compile-cache", "--num-processes", "2"])
    assert (cfg.run.batch_length, cfg.run.batch_size, cfg.run.steps) == (8, 2, 10_000)
    assert cfg.run.overlap is False and cfg.env.fast_render is True
    assert cfg.logging.tags == ("a", "b") and cfg.model.mults == (1, 2)
    assert args.no_compile_cache is True and args.num_processes == 2 and args.process_id is None
    assert args.logdir == "x" and args.preset == "debug" and args.config is None
    assert args.base == config_lib.debug() and args.origin == "--preset debug"
    _, args = config_lib.parse_args(
        ["--logdir", "x", "--compile-cache", "/c", "--distributed=auto"]
    )
    assert args.compile_cache == "/c" and args.no_compile_cache is False
    assert args.distributed == "auto"
    # Each short flag sets its field (schema.py gives it in the field's annotation).
    values = dict(task="walker-walk", steps="5000", seed="3", envs="2", obs="pixels")
    argv = [f"--{k}={v}" for k, v in values.items()] + ["--wandb", "offline"]
    cfg, _ = config_lib.parse_args(["--logdir", "x", *argv])
    assert set(config_lib.SHORTCUTS) == {*values, "wandb"}
    assert (cfg.env.task, cfg.env.obs, cfg.env.envs) == ("walker-walk", "pixels", 2)
    assert (cfg.run.steps, cfg.run.seed, cfg.logging.wandb) == (5000, 3, "offline")
    # The later of two values wins; a shortcut and its field are one option.
    cfg, _ = config_lib.parse_args(["--logdir", "x", "--seed", "3", "--run.seed", "4"])
    assert cfg.run.seed == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--run.steps", "2.5"], "--run.steps: cannot parse '2.5' as int"),
        (["--run.overlap", "maybe"], "--run.overlap: cannot parse 'maybe' as bool"),
        (["--model.mults", "1,x"], "--model.mults: cannot parse '1,x'"),
        (["--num-processes", "two"], "--num_processes: cannot parse 'two' as int"),
        (["walker"], "unexpected argument 'walker'"),
        (["--run.steps", "5", "6"], "unexpected argument '6'"),
        (["--model.detr", "512"], "unknown config field 'model.detr'; did you mean 'model.deter'?"),
        (["--run.deter=512"], "unknown config field 'run.deter'; did you mean 'model.deter'"),
        (["--logdri", "y"], "unknown config field 'logdri'; did you mean 'logdir'?"),
        (["--model.carry_state", "false"], "no longer a setting (the 2023 code's carried"),
    ],
)
def test_a_bad_flag_is_one_message_naming_it(extra, message):
    with pytest.raises(ValueError) as info:
        config_lib.parse_args(["--logdir", "x", *extra])
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("extra", "fragment", "absent"),
    [
        (
            ["--preset", "dreamerv4"],
            "unknown --preset 'dreamerv4'; did you mean 'dreamerv3'",
            "sac",
        ),
        (["--preset", "size3m"], "the sizes are size1m, size12m, size25m, size50m", "planet"),
        (["--task", "walker-wlk"], "unknown dm-control task 'walker-wlk'; did you mean ", "dog"),
        (["--task", "cheetah-walk"], "did you mean 'cheetah-run'? (", "walker"),
        (["--task", "gym:CartPol-v1"], "did you mean 'gym:CartPole-v1'", "Pendulum-v1'?"),
        (["--mdl.x", "1"], "unknown config field 'mdl.x' (--help lists every field)", "model"),
    ],
)
def test_unknown_names_get_the_closest_not_the_whole_list(extra, fragment, absent):
    with pytest.raises(ValueError) as info:
        config_lib.parse_args(["--logdir", "x", *extra])
    message = str(info.value)
    assert fragment in message and absent not in message, message
    assert "--help lists" in message or "lists all" in message or "lists every" in message


def test_the_command_prints_the_message_and_exits_2(capsys):
    assert train_lib.main(["--logdir", "x", "--model.detr", "512"]) == 2
    assert "did you mean 'model.deter'?" in capsys.readouterr().err


def test_differences_are_the_fields_a_run_changed_from_its_preset():
    base = config_lib.debug()
    changed = config_lib.replace(base, {"run.train_ratio": 32.0, "logging.entity": "me"})
    assert config_lib.differences(changed, base) == [
        "run.train_ratio: 64.0 -> 32.0",
        "logging.entity: '' -> me",
    ]
    argv = ["--logdir", "x", "--task", "walker-walk", "--model.deter", "64"]
    argv += ["--run.overlap", "false", "--logging.tags", "a,b", "--model.mults", "1,2,3,4"]
    cfg, args = config_lib.parse_args(argv)
    assert config_lib.differences(cfg, args.base) == [  # in the fields' order
        "env.task: cartpole-balance -> walker-walk",
        "run.overlap: true -> false",
        "model.deter: 32 -> 64",
        "model.mults: 2,3,4,4 -> 1,2,3,4",
        "logging.tags: '' -> a,b",
    ]
    cfg, args = config_lib.parse_args(["--logdir", "x", "--preset", "sac"])
    assert args.base == config_lib.sac() and config_lib.differences(cfg, args.base) == []


def test_shell_completion_is_written(tmp_path):
    path = tmp_path / "rssm-train.bash"
    with pytest.raises(SystemExit) as info:
        config_lib.parse_args(["--tyro-write-completion", "bash", str(path)])
    assert not info.value.code
    script = path.read_text()
    assert "--model.deter" in script and "--task" in script and "--no_compile_cache" in script
    assert "complete -F _tyro_rssm_train rssm-train" in script  # not for every `python`
