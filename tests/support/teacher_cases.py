"""Examples the teacher tests share: the dev samples, a hand-made three-hop chain with look-alike
distractors, and the full-style trace the structured teacher writes for it."""

from __future__ import annotations

import random
from functools import cache

from paths import SAMPLES

from mbt_online.tasks import Example, Hop, load_examples
from mbt_online.teachers.structured import StructuredTeacher


@cache
def examples(dataset: str) -> tuple[Example, ...]:
    return tuple(load_examples(dataset, SAMPLES[dataset]).examples)


def chain_example() -> Example:
    """A synthetic-world style 3-hop chain with look-alike distractors."""
    docs = [
        ("Orla Venn", "Orla Venn is a painter. She was born in the town of Harrowgate."),
        ("Harrowgate", "Harrowgate is a town on the river Sull. It lies in the province of Keld."),
        ("Keld", "Keld is a province whose capital is Marrow Cross."),
        ("Orla Venning", "Orla Venning is a sculptor who was born in Dunmere."),
        ("Dunmere", "Dunmere is a town in the province of Astor."),
    ]
    hops = [
        Hop("Where was Orla Venn born?", "Harrowgate", "Orla Venn"),
        Hop("#1 >> located in the administrative territorial entity", "Keld", "Harrowgate"),
        Hop("#2 >> capital", "Marrow Cross", "Keld", docs[2][1]),
    ]
    return Example(
        id="world-1",
        question="What is the capital of the province that contains the birthplace of Orla Venn?",
        documents=docs,
        answer="Marrow Cross",
        supporting_titles=["Orla Venn", "Harrowgate", "Keld"],
        hops=hops,
        type="3hop",
    )


def good_trace() -> str:
    return StructuredTeacher().synthesize(chain_example(), random.Random(0))


def musique_two_hop() -> Example:
    return next(ex for ex in examples("musique") if len(ex.hops) == 2 and ex.hops[0].evidence)
