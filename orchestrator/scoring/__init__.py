"""Held-out data and the numbers: the corpus and its held-out split (corpus), the trusted scorer (scorer), the leak
check of prepared folders and candidate code (leakcheck) and the shingle arithmetic both share (shingles)."""
