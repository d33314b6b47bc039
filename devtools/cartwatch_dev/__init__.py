"""cartwatch's development tools: local stack, load generator, benchmark, chaos suite, demo."""
