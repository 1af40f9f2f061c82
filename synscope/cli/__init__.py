"""The command line: main.py holds the group and `read`; probe.py (`probe`, `demo`) and watch.py
(`watch`) hold their commands; options.py the shared options; privileges.py the root drop."""
