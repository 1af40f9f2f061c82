"""Build synscope, compiling its read path (synscope/core and synscope/read) with mypyc where it can.

`pip install .`, a wheel and `pip install -e .` all come through here (the metadata is in
pyproject.toml; this file only adds the compiled modules, as mypy and black build themselves).
Compiling needs a C compiler and the Python headers (Debian: gcc, python3-dev); mypy, which
brings mypyc, is a build requirement, and nothing new is needed at run time. Where compiling is
impossible, or SYNSCOPE_NO_COMPILE=1 is set, the install still succeeds with the Python sources,
says so once in the build log, and `synscope --version` gives the reason.

Beside the compiled modules the build writes synscope/_compiled.json: a hash of each compiled
module's source. synscope/__init__.py uses the compiled modules only while every source still
matches, so an edited source is never shadowed by a stale build (see docs/performance.md).
scripts/build-fast runs this file's build_ext in place for a checkout.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sys
import sysconfig
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
# What is compiled is a package, not a list: everything in synscope/core (the shared records) and
# synscope/read (sources, decode, tracker, analysis, verdict, pipeline, JSON Lines, split run).
COMPILED_PACKAGES = ("synscope/core", "synscope/read")
GROUP = "synscope.hotpath"  # mypyc's shared library lands inside the package: synscope/hotpath__mypyc*.so
MANIFEST = "_compiled.json"  # inside the synscope package
NO_COMPILE = "SYNSCOPE_NO_COMPILE"


def compiled_modules(root: str = ROOT) -> list[str]:
    """The files mypyc compiles, relative to root: every .py of COMPILED_PACKAGES except package __init__ files."""
    found: list[str] = []
    for package in COMPILED_PACKAGES:
        for path in sorted(glob.glob(os.path.join(root, package, "**", "*.py"), recursive=True)):
            if os.path.basename(path) != "__init__.py":
                found.append(os.path.relpath(path, root).replace(os.sep, "/"))
    return found


def _say(message: str) -> None:
    print(f"synscope build: {message}", file=sys.stderr, flush=True)


def _why_not_compile() -> str | None:
    """Why the read path cannot be compiled here (None: it can), checked before mypyc spends time on it."""
    if os.environ.get(NO_COMPILE, "") not in ("", "0"):
        return f"{NO_COMPILE} was set"
    if sys.implementation.name != "cpython":
        return f"mypyc needs CPython, not {sys.implementation.name}"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypy (mypyc) was not available to the build"
    if not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        return "the Python headers are missing (Debian: apt-get install python3-dev)"
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler}) found (Debian: apt-get install gcc)"
    return None


SOURCE_HASHES: dict[str, str] = {}  # module -> SHA-256 of the source mypyc compiled


def _mypyc_extensions() -> tuple[list[Extension], str | None]:
    """(extension modules, reason there are none)."""
    reason = _why_not_compile()
    if reason is not None:
        return [], reason
    from mypyc.build import mypycify

    # mypyc reads the sources relative to the working directory and writes its C into ./build
    os.chdir(ROOT)
    # the hashes are taken before mypyc reads the sources: a file edited during the build then
    # fails its check at start-up and its source is used, never a build of another version
    SOURCE_HASHES.update({p[:-3].replace("/", "."): _source_hash(os.path.join(ROOT, p)) for p in compiled_modules()})
    try:
        return list(mypycify(compiled_modules(), group_name=GROUP, opt_level="3")), None
    except (Exception, SystemExit) as e:  # mypyc reports type errors with sys.exit
        return [], f"mypyc failed: {_first_line(e)}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _source_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_manifest(package_dir: str, off_reason: str | None) -> None:
    """synscope/_compiled.json: the compiled modules with their sources' hashes, or why none are."""
    manifest: dict[str, Any] = {"python": sys.version.split()[0]}
    if off_reason is None:
        manifest["modules"] = dict(SOURCE_HASHES)
    else:
        manifest["modules"] = {}
        manifest["off"] = f"not compiled at install: {off_reason}"
    os.makedirs(package_dir, exist_ok=True)
    with open(os.path.join(package_dir, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


# mypyc type-checks and writes C when setup.py loads; pip also loads it only to read metadata
# (egg_info, dist_info), so compile only for a command that builds
BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop", "bdist_egg"}
EXTENSIONS, NOT_COMPILED = _mypyc_extensions() if BUILD_COMMANDS & set(sys.argv[1:]) else ([], None)


class BuildPy(build_py):
    """Writes the 'not compiled' manifest when there is nothing to compile (build_ext then does not run)."""

    def run(self) -> None:
        super().run()
        if NOT_COMPILED is not None:
            _say(f"compiled read path OFF, installing the Python sources only: {NOT_COMPILED}")
            in_place = getattr(self, "editable_mode", False)
            write_manifest(os.path.join(ROOT if in_place else self.build_lib, "synscope"), NOT_COMPILED)


class BuildExt(build_ext):
    """Compiles the read path; if the C compiler fails, keeps the Python sources and says why."""

    def run(self) -> None:
        where = os.path.join(ROOT if self.inplace else self.build_lib, "synscope")
        if not self.extensions:  # `setup.py build_ext` run by hand where nothing can be compiled
            reason = NOT_COMPILED or "nothing to compile"
            _say(f"compiled read path OFF, installing the Python sources only: {reason}")
            write_manifest(where, reason)
            return
        try:
            super().run()
        except (Exception, SystemExit) as e:  # CompileError, LinkError, a missing tool...
            removed = self._remove_outputs()
            reason = f"the C build failed ({type(e).__name__}; the compiler's messages are in the build log)"
            _say(f"compiled read path OFF, installing the Python sources only: {reason}; removed {removed} partial outputs")
            write_manifest(where, reason)
            return
        write_manifest(where, None)
        _say(f"compiled read path ON: {len(SOURCE_HASHES)} modules of synscope/core and synscope/read compiled with mypyc")

    def _remove_outputs(self) -> int:
        """Removes what a failed build left, so no partial set of compiled modules is installed."""
        removed = 0
        for ext in self.extensions:
            for base in {self.build_lib, ROOT if self.inplace else self.build_lib}:
                path = os.path.join(base, self.get_ext_filename(self.get_ext_fullname(ext.name)))
                if os.path.exists(path):
                    os.remove(path)
                    removed += 1
        return removed


setup(ext_modules=EXTENSIONS, cmdclass={"build_py": BuildPy, "build_ext": BuildExt})
