"""Tests of signflow.review (a package: its test modules may share base names with others)."""
