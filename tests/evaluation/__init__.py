"""Tests of signflow.evaluation (a package: its test modules may share base names with others)."""
