"""Fault-injection and hostile-input tests (issue 14).

A package, so its modules may share a base name with a module of tests/
(``test_images``) without clashing; tests/ stays on sys.path for helpers such as ``http_server``.
"""
