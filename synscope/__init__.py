"""synscope: a packet-level TCP handshake inspector."""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys

__version__ = "0.1.0"

# `pip install` (setup.py) and `scripts/build-fast` compile the read path with mypyc; the extension
# modules sit next to their sources and would be imported instead of them. They are used only while
# every source still matches the hash the build recorded in _compiled.json, so an edited module is
# never shadowed by a stale build. SYNSCOPE_PURE=1 forces the Python sources.
_HERE = os.path.dirname(os.path.abspath(__file__))
_MANIFEST = os.path.join(_HERE, "_compiled.json")


def _compiled_state() -> tuple[bool, str]:
    if os.environ.get("SYNSCOPE_PURE"):
        return False, "off (SYNSCOPE_PURE is set)"
    try:
        with open(_MANIFEST, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False, "off (not compiled: no build manifest; pip install . or scripts/build-fast compiles it)"
    if manifest.get("off"):
        return False, f"off ({manifest['off']})"
    if manifest.get("python") != sys.version.split()[0]:
        return False, f"off (built for Python {manifest.get('python')})"
    if not manifest.get("modules"):
        return False, "off (the build manifest lists no compiled module)"
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for module, digest in manifest.get("modules", {}).items():
        base = os.path.join(os.path.dirname(_HERE), *module.split("."))
        try:
            with open(base + ".py", "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != digest:
                    return False, f"off ({module} changed since it was compiled)"
        except OSError:
            return False, f"off ({module} is missing)"
        if not os.path.exists(base + suffix):
            return False, f"off (the compiled {module} is missing)"
    return True, f"on ({len(manifest['modules'])} modules compiled with mypyc)"


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Imports synscope's modules from their .py files even where a compiled module is present."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if not name.startswith("synscope.") or not path:
            return None
        leaf = name.rpartition(".")[2]
        for folder in path:  # type: ignore[attr-defined]
            source = os.path.join(folder, leaf + ".py")
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(name, source)
        return None


COMPILED, COMPILED_STATE = _compiled_state()
if not COMPILED:
    sys.meta_path.insert(0, _SourcesFirst())
