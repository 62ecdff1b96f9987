"""Tests of signflow.data (a package: its test modules may share base names with others)."""
