"""Every code block of the README runs (Python blocks) or parses (command lines), so the docs
cannot rot: Python blocks run in order in one namespace, from a folder beside which ``../shared``
is upstream's data (as in a fresh clone); each ``kinetix-torch`` command line is parsed by that
command's own flags parser, without running it."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex

import pytest

from conftest import REPO

from kinetix_torch.cli import COMMANDS
from kinetix_torch.commands.args import add_dataclass_arguments

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall((REPO / "README.md").read_text()) if lang == language]


def command_lines() -> list[list[str]]:
    """The ``kinetix-torch`` invocations of the bash blocks, as argument lists after the command name."""
    found = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("#", 1)[0].split("&&"):
                words = shlex.split(part)
                if words[:3] == [".venv/bin/python", "-m", "kinetix_torch"]:
                    found.append(words[3:])
                elif words[:1] == ["kinetix-torch"]:
                    found.append(words[1:])
    return found


def test_the_readme_has_code():
    assert len(blocks("python")) >= 4 and len(command_lines()) >= 6


def test_python_blocks_run(tmp_path, levels_dir):
    (tmp_path / "shared").symlink_to(levels_dir.parent, target_is_directory=True)
    work = tmp_path / "work"
    work.mkdir()
    namespace: dict = {}
    old = os.getcwd()
    os.chdir(work)
    try:
        for index, code in enumerate(blocks("python")):
            exec(compile(code, f"README.md python block {index + 1}", "exec"), namespace)
    finally:
        os.chdir(old)


@pytest.mark.parametrize("argv", command_lines(), ids=lambda argv: " ".join(argv)[:60])
def test_command_lines_parse(argv):
    name, flags = argv[0], argv[1:]
    assert name in COMMANDS, f"README uses an unknown command {name!r}"
    module = importlib.import_module(COMMANDS[name][0])
    if hasattr(module, "build_parser"):  # a command whose flags join several dataclasses
        parser = module.build_parser()
        parser.exit_on_error = False
        parser.parse_args(flags)
        return
    args_class = getattr(module, "Args", None)
    if args_class is None:  # a command with its own argparse: its --help must work
        with pytest.raises(SystemExit) as exit_info:
            module.main(["--help"])
        assert exit_info.value.code == 0
        return
    parser = argparse.ArgumentParser(prog=f"kinetix-torch {name}", exit_on_error=False)
    add_dataclass_arguments(parser, args_class)
    parser.parse_args(flags)
