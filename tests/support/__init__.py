"""Helpers that run gatecache and the real components it talks to.

Integration tests and benchmarks import this package with the `tests/`
folder on `sys.path`. Every helper starts its processes itself, keeps their
files under a directory the caller owns, binds only to loopback and stops
what it started by PID.
"""
