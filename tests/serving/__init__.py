"""Tests of signflow.serving (a package: its test modules may share base names with others)."""
