"""Fault runs (`make chaos`): partnerflow under worker kills, a server restart and outages."""
