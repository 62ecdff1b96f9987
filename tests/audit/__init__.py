"""Tests of signflow.audit (a package: its test modules may share base names with others)."""
