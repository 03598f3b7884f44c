"""bnlab.data."""
