"""ROLLOUT and HANDOFF: every sampler of the student, the backend choice, vLLM's arguments and
CPU patches."""
