"""Plugins the tests install as entry points (through a generated dist-info)."""
