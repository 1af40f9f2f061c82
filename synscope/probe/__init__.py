"""`synscope probe`: building probe packets and classifying what comes back (classify.py), and
the one send/capture loop, including the captured real connect() (run.py). What it captures goes
through synscope.read like any other frame."""
