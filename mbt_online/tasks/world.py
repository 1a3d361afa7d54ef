"""The embedded synthetic multi-hop world: entities, relations, documents and k-hop questions.

It exists so the default run can show the whole method with no hub and no GPU: facts are random
per world, so a student can only answer by reading the documents, and every question's gold chain
is known exactly, which the structured teacher, the rewards and the tests rely on.

Its shape is chosen so a tiny student trained in two CPU minutes can learn to read it:
- every name is two words from small closed pools, so a tokenizer trained on world text makes each
  name word a single token; the last word is the distinctive one ("Port Alder", "Ida Vale");
- documents are fact sheets, one fact per sentence as "<subject> <relation> <object>."
  ("Ida Vale employer House Flint."), so the two words before an object (subject's last word,
  relation) locate it: a lookup is a copy;
- questions read hop by hop from left to right ("What is Ida Vale's employer's location?");
- held-out (eval) worlds use other *combinations* of the same words: a name combination belongs to
  the train or the eval side by the parity of its word indices. No entity is shared between the two
  sides, yet no eval token is unseen in training.
Hop sub-questions stay plain English ("What is the employer of Ida Vale?") for the teacher.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Literal

from mbt_online.config import DataSplit, WorldConfig
from mbt_online.tasks.base import Example, Hop

Purpose = Literal["train", "eval"]
KINDS = ("person", "company", "city", "country")
TIERS = {2: "easy", 3: "medium", 4: "hard"}


@dataclass(frozen=True)
class Relation:
    """A functional relation: each subject has exactly one object, stated by one sentence."""

    name: str
    subject: str  # entity kind
    object: str  # entity kind
    noun: str  # how questions and documents name it: "X's employer", "X employer Y."
    template: str  # the document sentence, with {s} and {o}

    def sentence(self, subject: str, obj: str) -> str:
        return self.template.format(s=subject, o=obj)


RELATIONS: tuple[Relation, ...] = (
    Relation("born_in", "person", "city", "birthplace", "{s} birthplace {o}."),
    Relation("works_for", "person", "company", "employer", "{s} employer {o}."),
    Relation("based_in", "company", "city", "location", "{s} location {o}."),
    Relation("founded_by", "company", "person", "founder", "{s} founder {o}."),
    Relation("located_in", "city", "country", "country", "{s} country {o}."),
    Relation("mayor", "city", "person", "mayor", "{s} mayor {o}."),
    Relation("capital", "country", "city", "capital", "{s} capital {o}."),
    Relation("leader", "country", "person", "leader", "{s} leader {o}."),
)
RELATION_BY_NAME = {r.name: r for r in RELATIONS}
RELATION_BY_NOUN = {r.noun: r for r in RELATIONS}


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Name pools: (first words, last words) per kind. Every word appears on both sides of the
# train/eval split; only the combinations differ. The LAST word of a name is the distinctive one
# (a root), so "<last word> <relation>" is a near-unique key for a fact in a question's documents.
NAME_POOLS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "person": (
        _words(
            "Ada Ben Cora Dan Eli Fay Gus Hal Ida Jon Kit Lea Max Nia Otto Pia Rex Sam "
            "Tia Uma Vic Wes Yara Zoe"
        ),
        _words(
            "Vale Crane Moss Reed Frost Hale Finch Stone Wren Marsh Pike Quill Rook Thorn "
            "Birch Cole Dale Fenn Gale Holt Lark Nash Oakes Penn"
        ),
    ),
    "company": (
        _words("Studio House Club Bank Hotel Market"),
        _words(
            "Amber Bolt Cedar Delta Ember Flint Granite Helix Iron Jade Kite Lumen Maple "
            "Nova Onyx Pine Quartz Raven Sable Tide Umber Vortex Willow Xenon Yew Zephyr "
            "Apex Beacon Cobalt Dune"
        ),
    ),
    "city": (
        _words("Port Lake Fort Mount Glen Cape"),
        _words(
            "Alder Brindle Corvin Dunmore Elmsby Farrow Garth Harrow Ivel Jarrow Kessel "
            "Lunden Merrow Norvik Orrin Pellam Rydal Selby Tarrow Ulden Varne Wexley "
            "Yarrow Zennor Ashby Bramble Calder Dovey Eskdale Fenwick"
        ),
    ),
    "country": (
        _words("North South East West Upper"),
        _words(
            "Arvia Belmar Corva Dravia Estra Falmor Galdra Hesper Istra Jorva Kaldor "
            "Lumbria Morva Norland Ostra Pavia Quenta Rovia Solvia Tavor Ulmar Vesna "
            "Wendia Zarov"
        ),
    ),
}

_QUESTION_RE = re.compile(
    r"^(?:What|Who) is (?P<start>[A-Z]\w* [A-Z]\w*)(?P<chain>(?:'s [a-z]+)+)\?$"
)
_HOP_RE = re.compile(r"^(?:What|Who) is the (?P<noun>[a-z]+) of (?P<start>[^?]+)\?$")


@dataclass
class World:
    """One generated world: names by kind, the facts, and one document per entity."""

    seed: int
    purpose: Purpose
    names: dict[str, list[str]]  # kind -> entity names
    kind_of: dict[str, str]  # entity name -> kind
    facts: dict[tuple[str, str], str]  # (subject, relation name) -> object
    documents: dict[str, str] = field(default_factory=dict)  # title (= entity) -> text

    def fact_sentence(self, subject: str, relation: str) -> str:
        return RELATION_BY_NAME[relation].sentence(subject, self.facts[(subject, relation)])

    def relations_of(self, entity: str) -> list[Relation]:
        return [r for r in RELATIONS if r.subject == self.kind_of[entity]]


def name_pool(kind: str, purpose: Purpose) -> list[str]:
    """All names of one kind on one side of the split, in a fixed order."""
    firsts, seconds = NAME_POOLS[kind]
    parity = 0 if purpose == "train" else 1
    return [
        f"{a} {b}"
        for i, a in enumerate(firsts)
        for j, b in enumerate(seconds)
        if (i + j) % 2 == parity
    ]


def max_entities_per_kind() -> int:
    """The largest `entities_per_kind` every kind's pool can supply on both sides."""
    return min(len(name_pool(k, p)) for k in KINDS for p in ("train", "eval"))


def generate_world(seed: int, cfg: WorldConfig, purpose: Purpose = "train") -> World:
    """A random world: `entities_per_kind` entities of each kind and every relation's facts."""
    n = cfg.entities_per_kind
    if n > max_entities_per_kind():
        raise ValueError(
            f"world.entities_per_kind={n} exceeds the name pools "
            f"(at most {max_entities_per_kind()})"
        )
    rng = random.Random(f"world:{purpose}:{seed}")
    names = {kind: rng.sample(name_pool(kind, purpose), n) for kind in KINDS}
    kind_of = {name: kind for kind, group in names.items() for name in group}
    facts: dict[tuple[str, str], str] = {}
    for rel in RELATIONS:
        if rel.name == "capital":
            continue  # drawn below, from the country's own cities where it has any
        for subject in names[rel.subject]:
            facts[(subject, rel.name)] = rng.choice(names[rel.object])
    for country in names["country"]:
        own = [c for c in names["city"] if facts[(c, "located_in")] == country]
        facts[(country, "capital")] = rng.choice(own or names["city"])
    world = World(seed=seed, purpose=purpose, names=names, kind_of=kind_of, facts=facts)
    world.documents = {e: _document(world, e) for e in kind_of}
    return world


def _document(world: World, entity: str) -> str:
    return " ".join(world.fact_sentence(entity, r.name) for r in world.relations_of(entity))


def parse_sentence(sentence: str) -> tuple[str, Relation, str] | None:
    """(subject, relation, object) of one world document sentence, or None."""
    for rel in RELATIONS:
        pattern = (
            re.escape(rel.template).replace(r"\{s\}", "(?P<s>.+?)").replace(r"\{o\}", "(?P<o>.+?)")
        )
        m = re.fullmatch(pattern, sentence.strip())
        if m:
            return m["s"], rel, m["o"]
    return None


def world_sentences(text: str) -> list[str]:
    """The fact sentences of a world document. The world writes one fixed format ("X relation Y."
    with no other periods), so splitting at every "." is exact here; generated text needs
    `scoring.text.split_sentences`."""
    return [s.strip() + "." for s in text.split(".") if s.strip()]


def question_chain(question: str) -> tuple[str, list[Relation]] | None:
    """Start entity and relations, first hop first, of a world question or hop question."""
    m = _QUESTION_RE.match(question)
    if m:
        nouns = m["chain"].split("'s ")[1:]
    else:
        m = _HOP_RE.match(question)
        if not m:
            return None
        nouns = [m["noun"]]
    if any(noun not in RELATION_BY_NOUN for noun in nouns):
        return None
    return m["start"], [RELATION_BY_NOUN[noun] for noun in nouns]


def question_text(start: str, chain: list[Relation]) -> str:
    """'What is Tom Vale's employer's location's country?': hops read left to right."""
    wh = "Who" if chain[-1].object == "person" else "What"
    return f"{wh} is {start}" + "".join(f"'s {r.noun}" for r in chain) + "?"


def _sample_chain(world: World, k: int, rng: random.Random) -> tuple[list[str], list[Relation]]:
    """A k-hop path that never revisits an entity nor repeats a relation (so every hop is a real
    step, and each relation word names one hop of the question)."""
    while True:
        start = rng.choice(sorted(world.kind_of))
        path, rels = [start], []
        for _ in range(k):
            rel = rng.choice(world.relations_of(path[-1]))
            nxt = world.facts[(path[-1], rel.name)]
            if nxt in path or rel in rels:
                break
            path.append(nxt)
            rels.append(rel)
        if len(rels) == k:
            return path, rels


def _hops(world: World, path: list[str], rels: list[Relation]) -> list[Hop]:
    hops = []
    for subject, rel, obj in zip(path, rels, path[1:], strict=False):
        wh = "Who" if rel.object == "person" else "What"
        hops.append(
            Hop(
                question=f"{wh} is the {rel.noun} of {subject}?",
                answer=obj,
                title=subject,
                evidence=rel.sentence(subject, obj),
            )
        )
    return hops


def _confuser(world: World, path: list[str], rels: list[Relation], rng: random.Random) -> str:
    """An off-chain entity of the last hop's kind whose same relation leads elsewhere.

    It is the look-alike document an unregulated reader switches to: same relation, other answer.
    """
    last, rel, answer = path[-2], rels[-1], path[-1]
    side = [world.facts[(e, r.name)] for e in path[:-1] for r in world.relations_of(e)]
    pool = [e for e in side if world.kind_of[e] == rel.subject] + world.names[rel.subject]
    # sorted first: drawing the keys in set order made the world depend on PYTHONHASHSEED
    for e in sorted(sorted(set(pool)), key=lambda e: (e not in side, rng.random())):
        if e != last and e not in path and world.facts[(e, rel.name)] != answer:
            return e
    raise RuntimeError("no confuser document in this world")  # impossible with >= 4 entities


def twins(world: World, entity: str) -> list[str]:
    """Other entities of the same kind whose name ends in the same word: "Ben Vale" for
    "Ida Vale". The student copies a fact by the two words before it ("Vale employer"), so a
    twin's document in the prompt makes that copy ambiguous."""
    last = entity.split()[-1]
    same = world.names[world.kind_of[entity]]
    return [e for e in same if e != entity and e.split()[-1] == last]


def _twin_chain(
    world: World, path: list[str], rels: list[Relation], n: int, rng: random.Random
) -> list[str]:
    """A look-alike chain for `world.twin_hops`: the twin of an intermediate hop's subject and the
    documents its wrong fact leads through to a wrong final answer, at most `n` documents; []
    when no hop has a twin whose chain fits and stays off the gold one."""
    k_hops = len(rels)
    options = [(k, t) for k in range(max(0, k_hops - n), k_hops - 1) for t in twins(world, path[k])]
    rng.shuffle(options)
    for k, twin in options:
        chain, entity = [twin], twin
        for rel in rels[k:]:
            entity = world.facts[(entity, rel.name)]
            chain.append(entity)
        docs = chain[:-1]  # the last object is the wrong answer: its document is never read
        if set(chain) & set(path) or len(set(chain)) < len(chain) or len(docs) > n:
            continue
        return docs
    return []


def _distractors(
    world: World,
    path: list[str],
    rels: list[Relation],
    n: int,
    rng: random.Random,
    twin_hops: bool = False,
) -> list[str]:
    """Off-chain documents that share an entity or a relation with the chain, confuser first
    (with `twin_hops`, a look-alike chain first)."""
    if n == 0:
        return []
    chosen = _twin_chain(world, path, rels, n, rng) if twin_hops else []
    if len(chosen) >= n:
        return chosen
    if not chosen:
        chosen = [_confuser(world, path, rels, rng)]
    on_chain = set(path)
    side = {world.facts[(e, r.name)] for e in path[:-1] for r in world.relations_of(e)}
    back = {s for (s, _), o in world.facts.items() if o in on_chain}
    near = sorted((side | back) - on_chain - set(chosen))
    rng.shuffle(near)
    chosen += near[: n - len(chosen)]
    rest = sorted(set(world.kind_of) - on_chain - set(chosen))
    chosen += rng.sample(rest, n - len(chosen)) if len(chosen) < n else []
    return chosen


def make_examples(
    world: World, n: int, seed: int, cfg: WorldConfig, distractors: int | None = None
) -> list[Example]:
    """n distinct questions with hop counts cycling min_hops..max_hops, in generation order.

    Documents are the chain's documents (the start entity's and each bridge entity's) plus
    `distractors` (default `cfg.distractors`) off-chain ones, shuffled.
    """
    n_distract = cfg.distractors if distractors is None else distractors
    rng = random.Random(f"questions:{world.purpose}:{world.seed}:{seed}")
    hop_counts = list(range(cfg.min_hops, cfg.max_hops + 1))
    seen: set[str] = set()
    out: list[Example] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"world {world.seed} has too few distinct questions for n={n}")
        k = hop_counts[len(out) % len(hop_counts)]
        path, rels = _sample_chain(world, k, rng)
        question = question_text(path[0], rels)
        if question in seen:
            continue
        seen.add(question)
        out.append(
            _example(world, path, rels, question, n_distract, rng, len(out), seed, cfg.twin_hops)
        )
    return out


def _example(world, path, rels, question, n_distract, rng, index, seed, twin_hops) -> Example:
    hops = _hops(world, path, rels)
    titles = [h.title for h in hops] + _distractors(world, path, rels, n_distract, rng, twin_hops)
    rng.shuffle(titles)
    k = len(rels)
    return Example(
        id=f"world-{world.purpose}{world.seed}-{seed}-{index:05d}",
        question=question,
        documents=[(t, world.documents[t]) for t in titles],
        answer=path[-1],
        supporting_titles=[h.title for h in hops],
        supporting_sentences=[(h.title, h.evidence) for h in hops],
        hops=hops,
        tier=TIERS[k],
        source="world",
        type=f"{k}hop",
    )


def world_split(split: DataSplit, cfg: WorldConfig, purpose: Purpose) -> list[Example]:
    """The questions of one split: its own world (`split.world_seed`) on its side of the names.

    `offset`/`limit` slice the generated questions (more are generated when the slice needs them);
    `shuffle` reorders them first with the world seed, so hop counts are mixed in any slice.
    """
    n = max(cfg.questions, split.offset + (split.limit or 0))
    world = generate_world(split.world_seed, cfg, purpose)
    examples = make_examples(world, n, split.world_seed, cfg, distractors=split.distractors)
    if split.shuffle:
        random.Random(f"shuffle:{split.world_seed}").shuffle(examples)
    end = None if split.limit is None else split.offset + split.limit
    return examples[split.offset : end]


# --------------------------------------------------------------------------------------------------
# The world's own line style: a clean derivation as the world student writes it. The simulated
# reasoner (sim/) branches off these lines; the structured teacher's "student" style rewrites into
# them, so both read them from the task rather than from each other.

PLAN = "Plan: follow each hop."


def is_world_question(ex: Example) -> bool:
    """Whether the example is a world chain this reasoner (and so the world student) can write."""
    return ex.source == "world" and bool(ex.hops) and question_chain(ex.question) is not None


def clean_lines(ex: Example) -> list[str]:
    """The clean derivation in the student's own wording: goal, one line per hop, the answer.

    MBT-R's teacher for the world student rewrites into exactly these lines (plus its phase
    lines), so SFT moves the decision after the answer instead of relearning how to read.
    """
    return [_goal_line(ex), *hop_lines(ex), answer_line(ex)]


def _nouns(ex: Example) -> list[str]:
    parsed = question_chain(ex.question)
    if parsed is None:
        raise ValueError(f"not a world question: {ex.question!r}")
    return [r.noun for r in parsed[1]]


def _goal_line(ex: Example) -> str:
    """The question's path, copied, and a fixed plan: the phases the reasoner does have."""
    start = ex.hops[0].title
    return f"We need to find {start}" + "".join(f"'s {n}" for n in _nouns(ex)) + f"? {PLAN}"


def hop_lines(ex: Example) -> list[str]:
    """One line per hop: the step in the path, then the document's fact that takes it."""
    return [f"{hop_path(ex, i)}: {hop.evidence}" for i, hop in enumerate(ex.hops)]


def hop_path(ex: Example, i: int) -> str:
    """The step in the question's path that hop `i` takes ("...'s employer's location")."""
    nouns = _nouns(ex)
    return f"{ex.hops[0].title}'s {nouns[0]}" if i == 0 else f"...'s {nouns[i - 1]}'s {nouns[i]}"


def answer_line(ex: Example, answer: str | None = None) -> str:
    """The clean derivation's last line, stating `answer` (the gold one by default)."""
    return f"{_last_step(ex)} So the answer is {answer or ex.answer}."


@dataclass(frozen=True)
class TwinSlip:
    """The slip a question's look-alike chain invites (`world.twin_hops`): at hop `hop` the
    reader copies the `twin`'s fact instead of the `subject`'s and follows `wrong` (the wrong
    chain's sentences, the slip first) to `answer`. The world knows it, so metrics can tell a
    slip, its catch and its repair apart in any trace."""

    hop: int
    twin: str
    subject: str
    wrong: tuple[str, ...]
    answer: str

    def repair_line(self) -> str:
        """The self-correction that names the conflicting document."""
        return f"Wait, {self.twin} is not {self.subject}."


def twin_slip(ex: Example) -> TwinSlip | None:
    """The look-alike chain of a world question, read from its documents, or None."""
    parsed = question_chain(ex.question) if ex.source == "world" else None
    if parsed is None or len(ex.hops) < 2:
        return None
    docs, gold = dict(ex.documents), set(ex.supporting_titles)
    rels = parsed[1]
    for k, hop in enumerate(ex.hops[:-1]):
        for title in docs:
            same_last = title.split()[-1] == hop.title.split()[-1]
            if title in gold or not same_last:
                continue
            wrong = _follow(docs, title, rels[k:])
            if wrong and parse_sentence(wrong[-1])[2] != ex.answer:  # type: ignore[index]
                end = parse_sentence(wrong[-1])[2]  # type: ignore[index]
                return TwinSlip(k, title, hop.title, tuple(wrong), end)
    return None


def _follow(docs: dict[str, str], start: str, rels: list[Relation]) -> list[str] | None:
    """The sentences that follow `rels` from `start` through the given documents, or None when
    a document on the way is missing."""
    out, entity = [], start
    for rel in rels:
        facts = [parse_sentence(x) for x in world_sentences(docs.get(entity, ""))]
        fact = next((f for f in facts if f and f[0] == entity and f[1] == rel), None)
        if fact is None:
            return None
        out.append(rel.sentence(entity, fact[2]))
        entity = fact[2]
    return out


def hop_line(hop: Hop) -> str:
    """The fact of one hop as the trace quotes it (the document sentence)."""
    return hop.evidence


def _last_step(ex: Example) -> str:
    return f"...'s {_nouns(ex)[-1]}?"
