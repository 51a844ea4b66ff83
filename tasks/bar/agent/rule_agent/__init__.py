"""rule-agent: a deterministic Harbor agent that maps instructions to shell commands."""
