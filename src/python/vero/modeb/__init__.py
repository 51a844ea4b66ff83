"""Mode B: each sample is a Harbor task, scored by a nested `harbor run`."""
