"""bnlab.nn."""
