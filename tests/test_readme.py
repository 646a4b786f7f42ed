"""The README's commands and example are the ones that work."""

import json
import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
CI = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()


def test_readme_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) == 2
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    loss, elbo, kl = map(float, re.findall(r"-?\d+\.\d+", out))
    assert elbo < 0 and kl >= 0 and loss > 0
    # The agent example: Dreamer's components and its slow critic and return normalizer.
    exec(compile(blocks[1], "README.md", "exec"), {})
    out = capsys.readouterr().out.strip()
    assert out == "['actor', 'critic', 'wm'] ['retnorm', 'slow_critic'] (4, 1)"


def test_ci_runs_the_readme_test_command():
    bash = re.findall(r"```bash\n(.*?)```", README, re.S)
    test_cmd = next(b.strip() for b in bash if "pytest" in b)
    assert test_cmd in CI
    install = next(b.strip() for b in bash if "apt-get" in b)
    for pkg in re.search(r'APT_PACKAGES="([^"]+)"', CI).group(1).split():
        assert pkg in install, pkg


def test_readme_train_commands_parse(tmp_path):
    # Every runner command the README shows is accepted as written (flags, fields, presets).
    import shlex

    from experiments import config as config_lib

    bash = "\n".join(re.findall(r"```bash\n(.*?)```", README, re.S)).replace("\\\n", " ")
    commands = [line.split("#")[0] for line in bash.splitlines() if "-m experiments.train" in line]
    assert len(commands) >= 6
    for line in commands:
        argv = shlex.split(line)
        argv = argv[argv.index("experiments.train") + 1 :]
        if "--config" in argv:  # a run's config.json: here one the runner would write
            path = tmp_path / "config.json"
            path.write_text(json.dumps(config_lib.to_dict(config_lib.PRESETS["dreamerv3"]())))
            argv[argv.index("--config") + 1] = str(path)
        cfg, args = config_lib.parse_args(argv)
        if "--run.seeds" in line:
            assert cfg.run.seeds > 1, line
        if "--num-processes" in line:
            assert args.num_processes == 2 and args.process_id == 0, line
