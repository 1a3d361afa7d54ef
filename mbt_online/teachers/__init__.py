"""Teachers: what turns a question (and the student's draft) into a verified training trace.

`contract` (requests, results, `verify`, the `Teacher` protocol) is all a caller needs; `llm` is
the LLM teacher, `structured` the rule-based one (built from `chain`, `phrases`, `writers`,
`pitfalls` and `drafts`), and `targets` turns scored rollouts and taught traces into SFT rows and
DPO pairs. Nothing is imported here, so loading one backend does not load the others.
"""
