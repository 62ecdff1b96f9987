"""Tests of signflow.commands (a package: its test modules may share base names with others)."""
