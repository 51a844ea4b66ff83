"""The trusted core: datasets, tiers, budgets, evaluation engine and sample records."""
