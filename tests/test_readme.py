"""The README's first command works as written (minus the install, which CI has just done)."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import onnx

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands() -> list[str]:
    return [ln.strip() for ln in README.read_text().splitlines() if ln.startswith("    python3 -m pip install")]


def test_readme_opens_with_the_two_commands() -> None:
    cmds = _commands()
    assert len(cmds) >= 2
    assert "hwprune-fx prune" in cmds[0]
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    pip_part, test_part = cmds[1].split(" && ")
    assert pip_part.replace("python3 -m ", "") in ci.replace("python3 -m ", "") and test_part in ci


def test_quickstart_runs(tmp_path: Path) -> None:
    steps = _commands()[0].split(" && ")[1:]  # skip the pip install
    for step in steps:
        argv = shlex.split(step)
        if argv[:2] == ["hwprune-fx", "example"]:
            argv += ["--size", "64"]  # same command, a smaller input keeps the test fast
        env = {**os.environ, "HWPRUNE_FX_CACHE": str(tmp_path / "cache")}
        res = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env)
        assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["oracle"]["max_rel_error"] < 1e-3
    onnx.checker.check_model(onnx.load(str(tmp_path / "resnet18.pruned.onnx")), full_check=True)
