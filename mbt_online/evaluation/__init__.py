"""EVAL outside the loop (the `eval` command) and the LLM judges."""
