"""The drifted topic's knowledge: documents and QA of the never-seen equipment that `lmops simulate`
asks about (`simulate.fresh_seed`, `simulate.fresh_entities`). In production the domain team would
publish these documents; here they are generated with the simulator's own seed, so they describe
exactly the equipment the drifted traffic asks about."""
from __future__ import annotations

import random

from lmops.data.generate import entity_records, fresh_entities, profile_doc, qa_pairs
from lmops.params import SimulateParams


def _entities(sim: SimulateParams):
    return fresh_entities(sim.fresh_seed, sim.fresh_entities)  # what the simulator asks about


def fresh_documents(sim: SimulateParams) -> list[dict]:
    rng = random.Random(sim.fresh_seed)
    return [d for e in _entities(sim) for d in entity_records(rng, e)]


def fresh_qa(sim: SimulateParams) -> list[dict]:
    return [{"entity": e.name, "doc": profile_doc(e), "question": q, "answer": a}
            for e in _entities(sim) for q, a in qa_pairs(e)]


def gate_split(qa: list[dict], per_entity: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(trainable, held-out gate items): `per_entity` questions of each fresh entity, chosen by `seed`
    before any data is seen, are the gate's and nothing else's: never a fine-tuning text (even when
    users asked them), never in the retrieval index (which holds documents, not questions). Their
    answers are facts of the entity's documents, so only reading those documents can answer them."""
    by_entity: dict[str, list[dict]] = {}
    for row in qa:
        by_entity.setdefault(row["entity"], []).append(row)
    held: set[str] = set()
    for name in sorted(by_entity):
        rows = by_entity[name]
        rng = random.Random(f"{seed}/{name}")  # per entity: the split does not move when entities are added
        held |= {r["question"] for r in rng.sample(rows, min(per_entity, len(rows)))}
    return [r for r in qa if r["question"] not in held], [r for r in qa if r["question"] in held]
