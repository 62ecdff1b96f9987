"""The README and the documentation site (issue 27): the site builds strictly, every shown command is run or
marked why it cannot run here, and the package map names every module.

A package, so its modules may share a base name with a module elsewhere in tests/.
"""
