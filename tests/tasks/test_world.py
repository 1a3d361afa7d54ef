"""The synthetic world: answerable chains, disjoint held-out names, reproducible seeds."""

from __future__ import annotations

import pytest

from mbt_online.config import DataSplit, WorldConfig
from mbt_online.tasks.world import (
    NAME_POOLS,
    generate_world,
    make_examples,
    max_entities_per_kind,
    name_pool,
    parse_sentence,
    question_chain,
    world_sentences,
    world_split,
)

CFG = WorldConfig(entities_per_kind=20, questions=60, distractors=3)


def solve_from_documents(question: str, documents: list[tuple[str, str]]) -> str | None:
    """Answer a world question by reading only its documents: the relation words and the text."""
    parsed = question_chain(question)
    assert parsed is not None, question
    entity, chain = parsed
    docs = dict(documents)
    for rel in chain:
        if entity not in docs:
            return None
        facts = [parse_sentence(s) for s in world_sentences(docs[entity])]
        objects = [f[2] for f in facts if f and f[0] == entity and f[1] == rel]
        if len(objects) != 1:
            return None
        entity = objects[0]
    return entity


def test_every_chain_is_answerable_from_its_documents_alone():
    examples = make_examples(generate_world(3, CFG), 60, 3, CFG)
    for ex in examples:
        assert solve_from_documents(ex.question, ex.documents) == ex.answer
        assert len(ex.hops) == int(ex.type[0])
        # each hop's document is present, states the hop's evidence, and chains into the next hop
        for i, hop in enumerate(ex.hops):
            assert hop.evidence in dict(ex.documents)[hop.title]
            assert hop.answer in hop.evidence
            nxt = ex.hops[i + 1].title if i + 1 < len(ex.hops) else ex.answer
            assert hop.answer == nxt
        assert ex.supporting_titles == [h.title for h in ex.hops]


def test_hop_counts_tiers_and_document_counts():
    examples = make_examples(generate_world(0, CFG), 30, 0, CFG)
    assert [int(e.type[0]) for e in examples[:6]] == [2, 3, 4, 2, 3, 4]
    tiers = {e.type: e.tier for e in examples}
    assert tiers == {"2hop": "easy", "3hop": "medium", "4hop": "hard"}
    for ex in examples:
        assert len(ex.documents) == len(ex.hops) + 3
        assert len({t for t, _ in ex.documents}) == len(ex.documents)  # no duplicate titles
        assert ex.source == "world"
    assert len({e.question for e in examples}) == len(examples)
    assert len({e.id for e in examples}) == len(examples)
    # shuffled: the first document is not always the chain's start
    assert any(ex.documents[0][0] != ex.hops[0].title for ex in examples)


def test_distractors_share_an_entity_or_the_last_relation_with_the_chain():
    for ex in make_examples(generate_world(5, CFG), 40, 5, CFG):
        chain = {h.title for h in ex.hops} | {ex.answer}
        last_rel = parse_sentence(ex.hops[-1].evidence)[1]
        off_chain = [(t, x) for t, x in ex.documents if t not in ex.supporting_titles]
        assert len(off_chain) == 3
        look_alike = [
            f
            for _, x in off_chain
            for f in map(parse_sentence, world_sentences(x))
            if f[1] == last_rel and f[2] != ex.answer
        ]
        assert look_alike, ex.question  # the confuser: same relation, another answer
        chain_docs = " ".join(dict(ex.documents)[t] for t in ex.supporting_titles)
        related = [t for t, x in off_chain if t in chain_docs or any(c in x for c in chain)]
        assert len(related) >= 2


def test_train_and_eval_worlds_share_no_entity_but_every_word():
    train = set()
    for seed in range(4):
        train |= set(generate_world(seed, CFG, "train").kind_of)
    held = set()
    for seed in range(1000, 1004):
        held |= set(generate_world(seed, CFG, "eval").kind_of)
    assert train and held and not train & held
    # the same words on both sides, so no held-out token is unseen in training
    words = lambda names: {w for n in names for w in n.split()}  # noqa: E731
    assert words(held) <= {w for a, b in NAME_POOLS.values() for w in a + b}
    assert len(words(train) & words(held)) > 0.8 * len(words(held))


def test_world_split_entities_are_disjoint_between_purposes():
    cfg = WorldConfig(entities_per_kind=20, questions=40)
    tr = world_split(DataSplit(world_seed=0), cfg, "train")
    ev = world_split(DataSplit(world_seed=0), cfg, "eval")  # same seed, other side
    names = lambda exs: {t for e in exs for t, _ in e.documents} | {e.answer for e in exs}  # noqa: E731
    assert not names(tr) & names(ev)


def test_seeds_reproduce_and_differ():
    a = make_examples(generate_world(7, CFG), 20, 1, CFG)
    b = make_examples(generate_world(7, CFG), 20, 1, CFG)
    c = make_examples(generate_world(8, CFG), 20, 1, CFG)
    assert a == b
    assert [e.question for e in a] != [e.question for e in c]
    assert generate_world(7, CFG).facts == generate_world(7, CFG).facts


def test_world_split_limit_offset_and_shuffle():
    split = DataSplit(world_seed=2, limit=10, offset=5, shuffle=False)
    full = world_split(DataSplit(world_seed=2, shuffle=False), CFG, "train")
    part = world_split(split, CFG, "train")
    assert [e.id for e in part] == [e.id for e in full[5:15]]
    more = world_split(DataSplit(world_seed=2, limit=100, shuffle=False), CFG, "train")
    assert len(more) == 100  # generates beyond world.questions when the slice needs it
    shuffled = world_split(DataSplit(world_seed=2, shuffle=True), CFG, "train")
    assert sorted(e.id for e in shuffled) == sorted(e.id for e in full)
    assert [e.id for e in shuffled] != [e.id for e in full]


def test_distractor_override_and_min_max_hops():
    cfg = WorldConfig(entities_per_kind=12, min_hops=3, max_hops=3, distractors=1)
    exs = world_split(DataSplit(world_seed=1, limit=8, distractors=0), cfg, "train")
    assert all(len(e.hops) == 3 and len(e.documents) == 3 for e in exs)


def test_name_pools_are_large_enough_and_checked():
    assert max_entities_per_kind() >= 40
    assert len(name_pool("person", "train")) + len(name_pool("person", "eval")) == 24 * 24
    with pytest.raises(ValueError, match="entities_per_kind"):
        generate_world(0, WorldConfig(entities_per_kind=max_entities_per_kind() + 1))


def test_parse_sentence_and_question_chain_round_trip():
    subject, rel, obj = parse_sentence("Port Alder mayor Ada Vale.")
    assert (subject, rel.name, obj) == ("Port Alder", "mayor", "Ada Vale")
    start, chain = question_chain("What is Ada Vale's employer's location's country?")
    assert start == "Ada Vale"
    assert [r.name for r in chain] == ["works_for", "based_in", "located_in"]
    assert question_chain("Who is the mayor of Port Alder?")[1][0].name == "mayor"  # hop question
    assert question_chain("Who wrote Hamlet?") is None
    assert question_chain("What is Ada Vale's favourite?") is None


def test_chains_never_repeat_a_relation_or_an_entity():
    for ex in make_examples(generate_world(9, CFG), 60, 2, CFG):
        rels = [parse_sentence(h.evidence)[1].name for h in ex.hops]
        assert len(set(rels)) == len(rels)
        entities = [h.title for h in ex.hops] + [ex.answer]
        assert len(set(entities)) == len(entities)


def test_worlds_are_the_same_in_every_process():
    """Python salts str hashes per process: a world drawn in set order changed with
    PYTHONHASHSEED, so two processes of one run evaluated different questions (and the bootstrap
    student, keyed on its traces, would be rebuilt by every process)."""
    import os
    import subprocess
    import sys

    code = (
        "import hashlib, json\n"
        "from mbt_online.config import DataSplit, WorldConfig\n"
        "from mbt_online.tasks.world import world_split\n"
        "exs = world_split(DataSplit(world_seed=3), WorldConfig(questions=60), 'eval')\n"
        "blob = json.dumps([[e.question, e.documents, e.answer] for e in exs])\n"
        "print(hashlib.sha256(blob.encode()).hexdigest())\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert len(digests) == 1
