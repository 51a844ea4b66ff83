"""Session archives: what an optimization run leaves behind, and the tools that read it."""
