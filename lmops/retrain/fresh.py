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
