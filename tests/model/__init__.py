"""Tests of signflow.model (a package: its test modules may share base names with others)."""
