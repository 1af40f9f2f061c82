"""Private network-namespace sandboxes (sandbox.py) and the `synscope demo` built on one (demo.py)."""
