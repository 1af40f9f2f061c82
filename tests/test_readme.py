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
    # Debian's own Python refuses `pip install .` (PEP 668): the first command installs into a venv
    assert blocks[:2] and re.fullmatch(
        r"apt-get update && apt-get install -y [a-z0-9. -]*python3-venv[a-z0-9. -]* && python3 -m venv \.venv && "
        r"\.venv/bin/pip install \. && \.venv/bin/synscope read pcaps/[\w.-]+\.pcap",
        blocks[0],
    ), "first command: Debian packages, a venv, install and read"
    packages = blocks[0].split(" && ")[1].split()[3:]
    assert {"gcc", "python3-dev", "libpcap0.8"} <= set(packages), "the compiled read path needs gcc and python3-dev; --filter needs libpcap"
    assert (ROOT / blocks[0].rpartition(" ")[2]).is_file(), "the README reads a capture that is not bundled"
    test_command = blocks[1].strip()
    assert test_command in (ROOT / ".ci" / "run").read_text()
