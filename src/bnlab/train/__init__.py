"""bnlab.train."""
