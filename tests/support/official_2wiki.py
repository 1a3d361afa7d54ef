"""The answer half of 2WikiMultihopQA's official evaluation, `2wikimultihop_evaluate_v1.1.py`
(github.com/Alab-NII/2wikimultihop), transcribed: how it reads `id_aliases.json`, builds each
question's gold set and scores one prediction against it. Kept as the script writes it (only the
supporting-fact and evidence parts left out) so the package's scores can be held against it."""

from __future__ import annotations

import json
import re
import string
from collections import Counter


def normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def f1_score(prediction, ground_truth):
    normalized_prediction = normalize_answer(prediction)
    normalized_ground_truth = normalize_answer(ground_truth)

    ZERO_METRIC = (0, 0, 0)

    if (
        normalized_prediction in ["yes", "no", "noanswer"]
        and normalized_prediction != normalized_ground_truth
    ):
        return ZERO_METRIC
    if (
        normalized_ground_truth in ["yes", "no", "noanswer"]
        and normalized_prediction != normalized_ground_truth
    ):
        return ZERO_METRIC

    prediction_tokens = normalized_prediction.split()
    ground_truth_tokens = normalized_ground_truth.split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return ZERO_METRIC
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1, precision, recall


def exact_match_score(prediction, ground_truth):
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def eval_answer(prediction, gold):
    em = exact_match_score(prediction, gold)
    f1, prec, recall = f1_score(prediction, gold)
    return em, f1, prec, recall


def update_answer(metrics, prediction, golds):
    max_em, max_f1, max_prec, max_recall = 0, 0, 0, 0

    for gold in golds:
        em, f1, prec, recall = eval_answer(prediction, gold)

        max_em = max(max_em, em)
        max_f1 = max(max_f1, f1)
        max_prec = max(max_prec, prec)
        max_recall = max(max_recall, recall)

    metrics["em"] += float(max_em)
    metrics["f1"] += max_f1
    metrics["prec"] += max_prec
    metrics["recall"] += max_recall

    return max_em, max_prec, max_recall


def read_aliases(alias_file):
    """`eval`'s first lines: Q_id -> {"aliases": set of aliases and demonyms}."""
    aliases = {}
    with open(alias_file) as f:
        for json_line in map(json.loads, f):
            aliases[json_line["Q_id"]] = {
                "aliases": set(json_line["aliases"] + json_line["demonyms"])
            }
    return aliases


def gold_answers(dp, aliases):
    """`eval`'s gold set of one question: the answer plus its `answer_id`'s aliases."""
    gold_answers = {dp["answer"]}  # Gold span
    if dp["answer_id"] in aliases and aliases[dp["answer_id"]]["aliases"]:
        gold_answers.update(aliases[dp["answer_id"]]["aliases"])
    return gold_answers


def score(prediction, dp, aliases):
    """(EM, F1) of one prediction, as `eval` adds them to its totals."""
    metrics = {"em": 0, "f1": 0, "prec": 0, "recall": 0}
    update_answer(metrics, prediction, gold_answers(dp, aliases))
    return metrics["em"], metrics["f1"]
