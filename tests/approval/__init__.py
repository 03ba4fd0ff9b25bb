"""A second lifecycle, declared only here: proof that a lifecycle is a declaration.

PYTEST_DONT_REWRITE: the workflow sandbox imports this package for every workflow.
"""
