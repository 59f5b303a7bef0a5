"""camkit's reliability suite: state, leaks, bad inputs, odd models, threads and numerics.

A package (with this ``__init__``) so its modules import as ``reliability.*`` and never clash with
``tests/conftest.py`` or the test modules one level up.
"""
