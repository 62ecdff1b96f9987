"""End-to-end stage runs under real DVC on the tiny project."""
