"""The README stays true: its example output is what the command prints, its test command is what CI runs."""

from __future__ import annotations

import re

from tests.helpers import ROOT, cli


def test_readme_example_is_real_output() -> None:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"```\n\$ synscope (read [^\n]+)\n(.*?)```", text, re.S)
    assert m, "README lost its example"
    proc = cli(*m.group(1).split())
    assert proc.stdout.rstrip() == m.group(2).rstrip(), "README example output is stale: paste the current output of the command"


def test_ci_runs_the_readme_test_command() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", text, re.S)
    assert blocks[:2] and blocks[0].startswith("pip install . && synscope read pcaps/"), "first command: install and read"
    test_command = blocks[1].strip()
    assert test_command in (ROOT / ".ci" / "run").read_text()
