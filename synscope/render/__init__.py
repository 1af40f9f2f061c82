"""Words and tables for people: the connection timeline (text.py), the summary table (table.py),
the run summary (summary.py), probe results (probe.py) and terminal escaping (safe.py). The JSON
Lines writer lives in synscope.read.jsonl because it is on the compiled per-connection path."""
