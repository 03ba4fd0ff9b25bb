"""Temporal workflows: one `Relationship` workflow per partner–customer pair.

PYTEST_DONT_REWRITE: the sandbox imports this package again for every workflow; see
`workflows/relationship.py`.
"""
