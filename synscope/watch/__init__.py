"""`synscope watch`: the live loop that feeds captured frames through synscope.read and prints
each connection as it ends (watcher.py)."""
