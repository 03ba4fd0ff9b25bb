"""partnerflow: the partner–customer relationship lifecycle on Temporal."""
