"""The relationship lifecycle as data: states, transitions, guards, role rules (no I/O)."""
