"""partnerflow's cost against a hand-written Temporal workflow and a bare floor: `python -m bench`."""
