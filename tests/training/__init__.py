"""Tests of signflow.training (a package: its test modules may share base names with others)."""
