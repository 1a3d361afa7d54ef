"""Text helpers every room shares: answer normalisation, whole-word mentions, word counts, and
the sentence and paragraph units that reach, redundancy and the RRP judge are measured on.

One home, so the teacher's `verify`, the rewards and the reported metrics can never disagree about
what a sentence is or whether a trace mentions a name. Pure functions on strings.
"""

from __future__ import annotations

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
WORD = re.compile(r"\w+")


def wordset(text: str) -> frozenset[str]:
    """The whitespace-separated words of a word list written as one string."""
    return frozenset(text.split())


def count_words(text: str) -> int:
    """Default token count: whitespace words, a tokenizer-free proxy stable across models."""
    return len(text.split())


def squash(text: str) -> str:
    """Lower case with runs of whitespace made one space: for comparing phrasings loosely."""
    return " ".join(text.lower().split())


# --------------------------------------------------------------------------------------------------
# Normalisation and mentions


def normalize_answer(s: str) -> str:
    """SQuAD normalisation (lowercase, drop punctuation, articles, extra spaces).

    Kept bit-for-bit the official scripts' order (HotpotQA's, 2Wiki's and MuSiQue's agree: only
    ASCII `string.punctuation` is dropped, before the articles) so EM / F1 are comparable with
    published numbers.
    """
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def normalize_loose(s: str) -> str:
    """Like `normalize_answer` but punctuation becomes a space, so "1990-1995" still contains the
    word "1990" and "Tolkien's" contains "tolkien"; both sides are normalised alike ("Jay-Z" ->
    "jay z" in gold and trace)."""
    s = "".join(" " if ch in _PUNCT else ch for ch in s.lower())
    return " ".join(_ARTICLES.sub(" ", s).split())


def mentions(text: str, phrase: str) -> bool:
    """Whole-word mention after SQuAD normalisation; empty phrases never match."""
    needle = normalize_answer(phrase)
    return bool(needle) and f" {needle} " in f" {normalize_answer(text)} "


# --------------------------------------------------------------------------------------------------
# Sentences and paragraphs of generated text

# only from the first mark of a run, possessive: a run of dots with no space after it is one
# failed match, not one per dot (a degenerate "......" trace was quadratic)
_BOUNDARY = re.compile(r"(?<![.!?])[.!?]++[\"')\]]*+\s+")
_ABBREVIATIONS = wordset("mr mrs ms dr prof st mt ft jr sr vs approx dept univ")
_INITIALS = re.compile(r"[a-z](\.[a-z])*")
_HEAD_CHARS = 64
_ONE_WORD = re.compile(r"\s*+(\S++)\s*+")  # possessive: fails at the second word, not the end


def _is_false_boundary(head: str, punct: str) -> bool:
    """A "." that ends an abbreviation, an initial ("J. R. R. Tolkien", "U.S.") or a list marker
    ("1. Find ...") does not end a sentence; multi-hop answers are full of such names."""
    if punct.strip().rstrip("\"')]") != ".":
        return False
    word = _last_word(head)
    if not word:
        return True
    last = word.lower().lstrip("\"'([")
    first = _ONE_WORD.fullmatch(head)  # a list marker: the head is one number
    marker = bool(first and first.group(1).isdigit())
    return last in _ABBREVIATIONS or bool(_INITIALS.fullmatch(last)) or marker


def _last_word(head: str) -> str:
    """The last whitespace-separated word of `head`, "" when none, reading only its end: `head`
    grows across skipped boundaries, and splitting all of it each time made a line of initials
    ("J. J. J. ...") quadratic. Only a word longer than the window reads further back."""
    tail = head[-_HEAD_CHARS:]
    words = tail.split()
    if len(head) <= _HEAD_CHARS or len(words) > 1 or (words and tail[0].isspace()):
        return words[-1] if words else ""
    if not words and head.isspace():  # stops at the first character that is not a space
        return ""
    return head.rsplit(None, 1)[-1]


def split_sentences(text: str) -> list[str]:
    """Sentences, splitting at line breaks and at ./!/? followed by whitespace.

    Splits only at whitespace, so joining the pieces with spaces normalises to the same text; that
    keeps "the trace contains the answer" and "some sentence contains the answer" in agreement.
    """
    out: list[str] = []
    for line in text.splitlines():
        start = 0
        for m in _BOUNDARY.finditer(line):
            if _is_false_boundary(line[start : m.start()], m.group()):
                continue
            out.append(line[start : m.end()].strip())
            start = m.end()
        out.append(line[start:].strip())
    return [s for s in out if s]


def split_paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs: the unit the paper's RRP judge labels."""
    return [p.strip() for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
