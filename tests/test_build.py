"""What an install gets: the read path compiled where it can be, else the Python sources and the reason.

Each test runs `setup.py build` of this checkout into a temporary folder, as `pip install .` and a
wheel do (what the build puts in its lib folder is what the wheel holds), then runs synscope from
that folder. No network: setuptools and mypy come from the test environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, pcap

COMPILED_PACKAGES = ("core", "read")  # setup.py compiles every module of these but the __init__ files


def _build(tmp_path: Path, **env_extra: str) -> tuple[Path, str]:
    """(the built synscope package folder, the build's log) of `setup.py build` with env_extra set."""
    env = {k: v for k, v in os.environ.items() if k not in ("SYNSCOPE_NO_COMPILE", "SYNSCOPE_PURE", "CC")}
    env.update(env_extra)
    base = tmp_path / "build"
    cmd = [sys.executable, "setup.py", "build", "--build-base", str(base)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    [package] = [p for p in base.glob("lib*/synscope") if p.is_dir()]
    return package, proc.stdout + proc.stderr


def _synscope(package: Path, *args: str, pure: bool = False) -> subprocess.CompletedProcess[str]:
    """Runs the built synscope (not the checkout's) from a folder where nothing else is importable."""
    env = {k: v for k, v in os.environ.items() if k != "SYNSCOPE_PURE"}
    env["PYTHONPATH"] = str(package.parent)
    if pure:
        env["SYNSCOPE_PURE"] = "1"
    return subprocess.run([sys.executable, "-m", "synscope", *args], cwd=package.parent.parent, env=env, capture_output=True, text=True, timeout=300)


def _expected_modules() -> set[str]:
    found = set()
    for name in COMPILED_PACKAGES:
        for path in (ROOT / "synscope" / name).rglob("*.py"):
            if path.name != "__init__.py":
                found.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


def test_no_compile_switch_installs_the_sources_and_says_why(tmp_path: Path) -> None:
    package, log = _build(tmp_path, SYNSCOPE_NO_COMPILE="1")
    assert list(package.rglob("*.so")) == []
    assert log.count("compiled read path OFF") == 1, log[-3000:]
    version = _synscope(package, "--version")
    assert "compiled read path: off (not compiled at install: SYNSCOPE_NO_COMPILE was set)" in version.stdout, version
    read = _synscope(package, "read", pcap("refused.pcap"))
    assert read.returncode == 0 and "refused" in read.stdout, read.stderr


@pytest.mark.slow
def test_failing_c_compiler_installs_the_sources_and_says_why(tmp_path: Path) -> None:
    """A compiler that fails (here `false`) leaves no partial set of compiled modules behind."""
    package, log = _build(tmp_path, CC="false")
    assert list(package.rglob("*.so")) == []
    assert log.count("compiled read path OFF") == 1, log[-3000:]
    version = _synscope(package, "--version").stdout
    assert "compiled read path: off (not compiled at install: the C build failed (CompileError" in version, version
    assert _synscope(package, "read", "--json", pcap("refused.pcap")).stdout.count('"outcome":"refused"') == 1


@pytest.mark.slow
def test_compiled_build_covers_core_and_read_and_records_its_sources(tmp_path: Path) -> None:
    if os.environ.get("SYNSCOPE_EXPECT_COMPILED") != "1":
        pytest.skip("no C compiler or Python headers here (scripts/test sets SYNSCOPE_EXPECT_COMPILED where there are)")
    package, log = _build(tmp_path)
    assert "compiled read path ON" in log and "OFF" not in log, log[-3000:]
    manifest = json.loads((package / "_compiled.json").read_text())
    assert set(manifest["modules"]) == _expected_modules()
    for module, digest in manifest["modules"].items():
        source = package.parent.joinpath(*module.split(".")).with_suffix(".py")
        assert hashlib.sha256(source.read_bytes()).hexdigest() == digest, module
        assert list(source.parent.glob(source.stem + ".*.so")), f"{module} was not compiled"
    assert "compiled read path: on" in _synscope(package, "--version").stdout
    fast, pure = (_synscope(package, "read", "--all", "--json", pcap("refused.pcap"), pcap("no-answer.pcap"), pure=p) for p in (False, True))
    assert fast.returncode == 0 and fast.stdout == pure.stdout and fast.stdout.count("\n") == 2
