"""Temporal workflows: one `Relationship` workflow per partner–customer pair."""
