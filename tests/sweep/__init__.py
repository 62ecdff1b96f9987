"""Tests of signflow.sweep (a package: its test modules may share base names with others)."""
