"""Renderers: every one of them takes the same reports and writes to a stream passed in."""
