"""bnlab.lab."""
