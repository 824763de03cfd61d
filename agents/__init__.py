"""Proposal backends behind one protocol."""
