"""Utility modules for the RLHF toolkit."""
