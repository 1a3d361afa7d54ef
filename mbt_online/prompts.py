"""Every prompt template of the project: student, metacognitive baseline, teacher and judges.

Kept in one module so that a change of wording is one diff, and so that the student's training
prompt and its evaluation prompt can never drift apart. The wording is ours; the structure follows
MBT_SPEC.md ("Prompts"). Judge prompts each fix a machine-readable output line, because a judge
whose verdict needs a second model to parse it is not a judge.
"""

from __future__ import annotations

import json
from typing import Any

from mbt_online.tasks.base import Example

# The student reasons inside <think> (Qwen3 thinking mode) and commits to one answer in tags, so
# extraction is a plain string search and "no tags" can be scored as wrong.
STUDENT_INSTRUCTION = (
    "Answer the question using the documents above. Reason step by step inside <think> and "
    "</think>, then give only the final answer, as short as possible (a name, a date, a number, "
    "yes or no), between <answer> and </answer>."
)
# The embedded world's instruction: its tiny student is trained from scratch and reads no English,
# so the 51 tokens of the full instruction were only cost, paid in every bootstrap row, rollout
# prefill and TRAIN row (an eighth of the quickstart's tokens). The tags stay, stated once.
WORLD_INSTRUCTION = (
    "Reason inside <think> and </think>, then answer between <answer> and </answer>."
)
_INSTRUCTIONS = {"world": WORLD_INSTRUCTION}  # by `Example.source`; others: STUDENT_INSTRUCTION

METACOGNITIVE_SYSTEM = (
    "You are a careful reasoner who answers multi-hop questions from a set of documents. Regulate "
    "your own thinking in five phases:\n"
    "1. Understanding and filtering: restate what the question asks and set aside the documents "
    "that are distractors.\n"
    "2. Planning: before reading closely, lay out the sub-questions (hops) you must answer, in "
    "order.\n"
    "3. Execution and monitoring: answer each sub-question from a named document, and check each "
    "finding against the documents and against what you found before.\n"
    "4. Self-correction: when something does not fit, say so plainly, name the flaw and change "
    "course.\n"
    "5. Verification: check the result against every constraint of the question, then stop; do "
    "not keep exploring once the evidence settles the answer.\n"
    "Think inside <think> and </think> and put the final answer between <answer> and </answer>."
)

# The three grades of a SimpleQA-style grader, in the order its prompt lists them.
JUDGE_GRADES = ("CORRECT", "INCORRECT", "NOT_ATTEMPTED")
# RRP paragraph labels (MBT_SPEC.md, Evaluation).
RRP_LABELS = ("PROGRESS", "VERIFICATION", "REDUNDANT")

_TEACHER_RULES = (
    'Style rules: write in the first person plural ("we"), as an internal monologue; separate '
    "paragraphs with a blank line; no markdown, no headings, no bullet lists; cite documents as "
    "Document [i] or by title. Reach the answer as if discovering it: never mention that an "
    "answer, a solution or any earlier reasoning was provided to you."
)

_PHASES_BRIEF = (
    "The monologue follows five phases: (1) understanding and filtering: restate the goal and set "
    "aside the distractor documents by title; (2) planning: the sub-questions in order; "
    "(3) execution and monitoring: answer each sub-question from a cited document and check it "
    "against earlier findings; (4) self-correction: at a real pitfall of this question (a "
    "look-alike document, stopping at the bridge entity, a misread relation) express doubt, name "
    "the flaw and correct it; (5) verification: re-check the chain against the question's "
    "constraints, then stop."
)


def render_documents(ex: Example) -> str:
    """Documents one per line, numbered from 1, so traces can cite them as "Document [i]"."""
    return "\n".join(
        f"Document [{i}] (Title: {title}) {' '.join(text.split())}"
        for i, (title, text) in enumerate(ex.documents, start=1)
    )


def _task_block(ex: Example) -> str:
    return f"{render_documents(ex)}\n\nQuestion: {ex.question}"


def instruction(ex: Example) -> str:
    """The instruction after the question: the world's short one or `STUDENT_INSTRUCTION`."""
    return _INSTRUCTIONS.get(ex.source, STUDENT_INSTRUCTION)


def student_messages(ex: Example, metacognitive: bool = False) -> list[dict]:
    """The student's chat prompt; no system turn unless this is the metacognitive baseline."""
    user = {"role": "user", "content": f"{_task_block(ex)}\n\n{instruction(ex)}"}
    if metacognitive:
        return [{"role": "system", "content": METACOGNITIVE_SYSTEM}, user]
    return [user]


# `student.chat_template: verbatim`: ChatML with every message's content emitted as it is. Qwen3's
# own template rewrites reasoning (it moves <think> into `reasoning_content` and drops the thinking
# of earlier turns), so the trace the student is trained on would not be the bytes it was given.
# The {% generation %} markers let TRL build assistant-only loss masks.
VERBATIM_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHAT_TEMPLATES = ("model", "verbatim")


def use_chat_template(tokenizer: Any, choice: str) -> Any:
    """The tokenizer the student's prompts and targets are rendered with: its own template
    (`model`) or `VERBATIM_CHAT_TEMPLATE` (`verbatim`), set on it so that generation (engine) and
    training (TRL) render alike; a tokenizer saved afterwards keeps the template it was given.
    ChatML's turn markers must be tokens of the model (Qwen, SmolLM2), or it is refused."""
    if choice == "model":
        return tokenizer
    if choice != "verbatim":
        raise ValueError(f"chat template {choice!r}: expected one of {', '.join(CHAT_TEMPLATES)}")
    vocab = tokenizer.get_vocab()
    missing = [t for t in ("<|im_start|>", "<|im_end|>") if t not in vocab]
    if missing:
        raise ValueError(
            f"student.chat_template=verbatim is ChatML, but the tokenizer has no {missing} "
            "token; use student.chat_template=model for this model"
        )
    tokenizer.chat_template = VERBATIM_CHAT_TEMPLATE
    return tokenizer


def format_target(trace: str, answer: str) -> str:
    """The SFT completion: the trace as the thinking block, then the committed answer."""
    return f"<think>\n{trace.strip()}\n</think>\n\n<answer>{answer.strip()}</answer>"


def _with_answer(ex: Example) -> str:
    aliases = [a for a in ex.aliases if a and a != ex.answer]
    also = f" (also accepted: {'; '.join(aliases)})" if aliases else ""
    return f"{_task_block(ex)}\n\nCorrect answer: {ex.answer}{also}"


def gold_solution_messages(ex: Example) -> list[dict]:
    """Teacher prompt for a plain-text guide to the answer; MBT-R's first turn reuses it."""
    content = (
        f"{_with_answer(ex)}\n\n"
        "Write a plain-text guide that shows how to reach this answer from the documents: the key "
        "facts and which document states each, the step-by-step logic from the question to the "
        "answer, and the pitfalls a reader could fall into here (distractor documents, "
        "look-alike entities, stopping at an intermediate entity) with how to notice each one."
    )
    return [{"role": "user", "content": content}]


def mbt_s_messages(ex: Example) -> list[dict]:
    """MBT-S: synthesize a five-phase monologue from scratch, knowing the answer."""
    content = (
        f"{_with_answer(ex)}\n\n"
        "Write the internal monologue of a reader who works this question out from the documents "
        f"alone. {_PHASES_BRIEF}\n\n{_TEACHER_RULES}\nOutput only the monologue."
    )
    return [{"role": "user", "content": content}]


def mbt_r_messages(ex: Example, gold_solution: str, draft: str) -> list[dict]:
    """MBT-R: (solution prompt, gold solution, rewrite request carrying the student's thinking)."""
    request = (
        "Below is a reader's own thinking on this question. Rewrite it into a better internal "
        f"monologue. {_PHASES_BRIEF}\n\n"
        "Keep the reader's valid explorations and findings, in their own order where they are "
        "right. Remove loops, restatements and doubt that adds nothing once the answer is "
        "established. Where the thinking goes wrong, do not silently replace it: let the "
        "monologue notice the problem while checking a document, say what is wrong and correct "
        "it. End with a short verification and stop.\n\n"
        f"{_TEACHER_RULES}\nOutput only the monologue.\n\n"
        f"Reader's thinking:\n{draft.strip() or '(empty)'}"
    )
    return _rewrite_turns(ex, gold_solution, request)


def _rewrite_turns(ex: Example, gold_solution: str, request: str) -> list[dict]:
    """A rewrite's conversation (MBT-R, Distill-R): the solution prompt, the teacher's gold
    solution as its answer, then the rewrite request carrying the draft."""
    return [
        *gold_solution_messages(ex),
        {"role": "assistant", "content": gold_solution},
        {"role": "user", "content": request},
    ]


def distill_messages(ex: Example) -> list[dict]:
    """Teacher distillation: the teacher solves the question as the student would, without the
    answer; its traces are rejection-sampled on the answer (the paper's distillation baseline)."""
    content = (
        f"{_task_block(ex)}\n\nWork the question out from the documents, step by step, in plain "
        "prose, and end with the answer.\nOutput only the reasoning."
    )
    return [{"role": "user", "content": content}]


def distill_r_messages(ex: Example, gold_solution: str, draft: str) -> list[dict]:
    """Distill-R, the paper's matched control: MBT-R's rewrite request without the five phases,
    so the same draft and content yield a clean derivation with no metacognitive structure."""
    request = (
        "Below is a reader's own thinking on this question. Rewrite it into a concise, correct "
        "derivation: keep the reader's valid findings in their order, remove loops, "
        "restatements and doubt, and replace wrong steps with the right ones. Do not restate "
        "the goal, lay out a plan, comment on mistakes or verify at the end: only the steps "
        f"and the answer.\n\n{_TEACHER_RULES}\nOutput only the derivation.\n\n"
        f"Reader's thinking:\n{draft.strip() or '(empty)'}"
    )
    return _rewrite_turns(ex, gold_solution, request)


def judge_correctness_messages(question: str, gold: str, predicted: str) -> list[dict]:
    """SimpleQA-style grade; the verdict is the last line "GRADE: <one of JUDGE_GRADES>"."""
    content = (
        "You grade answers to questions. Compare the predicted answer with the gold answer.\n"
        "- CORRECT: the prediction contains the gold answer's meaning without contradicting it "
        "(spelling variants, extra detail that is not wrong, and other names for the same entity "
        "are fine).\n"
        "- INCORRECT: the prediction states a different answer, contradicts the gold answer, or "
        "hedges between several candidates of which one is wrong.\n"
        '- NOT_ATTEMPTED: the prediction gives no answer (empty, a refusal, "I don\'t know", or '
        "only restates the question).\n\n"
        f"Question: {question}\nGold answer: {gold}\nPredicted answer: {predicted}\n\n"
        "Reply with one short sentence of reasoning, then a last line of exactly the form "
        "GRADE: CORRECT, GRADE: INCORRECT or GRADE: NOT_ATTEMPTED. The last line is parsed by a "
        "program, so write nothing after it."
    )
    return [{"role": "user", "content": content}]


def judge_answer_hit_messages(question: str, gold: str, trace: str) -> list[dict]:
    """Answer-hit: did the trace derive the gold answer with support anywhere, even if dropped?"""
    content = (
        "You inspect a reasoning trace for a multi-hop question. Decide whether, at any point, the "
        "trace derives the gold answer (or an equivalent name for it) as a supported conclusion of "
        "its reasoning, even if it later abandons it or ends with another answer. Merely listing "
        "the gold answer among guesses, or copying it from the question, does not count.\n\n"
        f"Question: {question}\nGold answer: {gold}\n\nTrace:\n{trace}\n\n"
        "Reply with one short sentence of reasoning, then a last line of exactly the form "
        "HIT: YES or HIT: NO. The last line is parsed by a program, so write nothing after it."
    )
    return [{"role": "user", "content": content}]


def _numbered(paragraphs: list[str]) -> str:
    return "\n\n".join(f"[P{i}] {p.strip()}" for i, p in enumerate(paragraphs, start=1))


def judge_rrp_messages(question: str, gold: str, paragraphs: list[str]) -> list[dict]:
    """RRP: the first paragraph that reaches the answer, and one label per paragraph, as JSON."""
    example = json.dumps({"answer_paragraph": 2, "labels": ["PROGRESS", "PROGRESS", "REDUNDANT"]})
    content = (
        "You audit a reasoning trace split into numbered paragraphs.\n"
        "1. answer_paragraph: the number of the first paragraph that derives the gold answer with "
        "evidence from the documents; 0 if no paragraph does.\n"
        "2. labels: one label per paragraph, in order:\n"
        "- PROGRESS: moves the reasoning forward (new fact, new step, a needed decision).\n"
        "- VERIFICATION: a concrete audit only: re-checking a claim against a named document, "
        "ruling out a named alternative, fixing a specific error, or re-deriving a result.\n"
        "- REDUNDANT: restatement, vague doubt, circling among the same options, or anything that "
        "adds nothing.\n\n"
        f"Question: {question}\nGold answer: {gold}\n\nTrace ({len(paragraphs)} paragraphs):\n"
        f"{_numbered(paragraphs)}\n\n"
        f"Reply with one JSON object on a single line and nothing else, e.g. {example}; "
        f"labels must have exactly {len(paragraphs)} entries, each one of "
        f"{', '.join(RRP_LABELS)}. It is parsed by a program."
    )
    return [{"role": "user", "content": content}]


def judge_mqi_messages(question: str, trace: str) -> list[dict]:
    """MQI: phase-presence level 0..5 and the distinct phases, as JSON."""
    example = json.dumps({"level": 3, "phases": ["planning", "execution", "verification"]})
    content = (
        "You rate the metacognitive structure of a reasoning trace for a multi-hop question. The "
        "phases are: understanding (restating the goal, filtering out distractor documents), "
        "planning (a roadmap of sub-questions before executing), execution (carrying out steps "
        "while monitoring them against the documents), self_correction (explicitly noticing and "
        "fixing a flaw), verification (checking the result against the question's constraints "
        "before stopping).\n"
        "Level: 0 = a direct answer with no reasoning; 1 = a linear chain of steps; 2 = a chain "
        "with either a plan or a verification; 3 = a plan and monitoring; 4 = four of the phases; "
        "5 = all five phases.\n\n"
        f"Question: {question}\n\nTrace:\n{trace}\n\n"
        "Reply with one JSON object on a single line and nothing else, e.g. "
        f"{example}; level is an integer 0-5 and phases lists the distinct phases present, using "
        "exactly the names understanding, planning, execution, self_correction, verification. It "
        "is parsed by a program."
    )
    return [{"role": "user", "content": content}]
