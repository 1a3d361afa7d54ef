"""The regulation testbed's world: look-alike chains at intermediate hops (`world.twin_hops`)."""

from __future__ import annotations

import hashlib
import json

from twin_world import TWIN_WORLD, twin_examples, with_slip

from mbt_online.config import WorldConfig
from mbt_online.tasks.world import (
    generate_world,
    make_examples,
    parse_sentence,
    twin_slip,
    world_sentences,
)


def test_most_questions_carry_a_look_alike_chain_that_ends_elsewhere():
    examples = twin_examples(120)
    slips = [(e, twin_slip(e)) for e in examples]
    found = [(e, s) for e, s in slips if s is not None]
    assert len(found) >= 0.7 * len(examples)
    for ex, slip in found:
        assert slip.hop < len(ex.hops) - 1  # an intermediate hop, never the last
        assert slip.twin.split()[-1] == slip.subject.split()[-1] and slip.twin != slip.subject
        assert slip.subject == ex.hops[slip.hop].title
        assert slip.answer != ex.answer
        assert len(slip.wrong) == len(ex.hops) - slip.hop
        titles = {t for t, _ in ex.documents}
        assert slip.twin in titles and slip.twin not in ex.supporting_titles
        # the wrong chain can be followed through the prompt's own documents
        for sentence in slip.wrong[:-1]:
            assert parse_sentence(sentence)[2] in titles
        assert len(ex.documents) == len(ex.hops) + TWIN_WORLD.distractors


def test_the_slip_copies_a_real_sentence_of_the_look_alikes_document():
    ex = with_slip(3)
    slip = twin_slip(ex)
    docs = dict(ex.documents)
    assert slip.wrong[0] in world_sentences(docs[slip.twin])
    assert slip.repair_line() == f"Wait, {slip.twin} is not {slip.subject}."


def test_without_twin_hops_the_world_is_the_one_it_was():
    plain = WorldConfig()
    examples = make_examples(generate_world(1000, plain, "eval"), 60, 1000, plain)
    assert all(twin_slip(e) is None for e in examples)
    # the fingerprint of these questions and documents as the world wrote them before twin_hops
    # existed (measured on the previous commit's tasks/world.py): the quickstart is unchanged
    blob = json.dumps([[e.question, e.documents] for e in examples]).encode()
    assert hashlib.sha256(blob).hexdigest()[:16] == "dc8d5b707733e6b7"
