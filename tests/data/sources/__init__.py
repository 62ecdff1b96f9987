"""Tests of signflow.data.sources (a package: its test modules may share base names with others)."""
