"""Click commands other than ``read``, one module each; cli.py registers them."""
