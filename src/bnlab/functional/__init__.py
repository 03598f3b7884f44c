"""bnlab.functional."""
