"""Tests of treadle.gateway (a package, so its conftest does not shadow tests/conftest.py)."""
