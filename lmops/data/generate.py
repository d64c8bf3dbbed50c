"""Seeded generator of the embedded default corpus: an industrial plant knowledge base.

Every entity (a piece of plant equipment) has attributes, a profile document, a maintenance
procedure and incident reports. Entities are split into train/val/test *by entity*, so the
validation and test documents describe equipment the model never saw in training: answering
their questions needs reading, not memory. In-context recall items (a fact early, a question
late) teach and test copying from context.
"""
from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field

KINDS = ["pump", "compressor", "valve", "turbine", "boiler", "conveyor", "chiller", "generator"]
# Kinds the model never sees in training: the drift and long-context stages draw from these.
FRESH_KINDS = ["centrifuge", "extruder", "furnace", "mixer"]
TEAMS = ["hydraulics", "electrical", "mechanical", "controls", "utilities", "safety"]
SITES = ["north yard", "south yard", "east hall", "west hall", "river dock", "main plant"]
CATEGORIES = {
    "leak": ["fluid pooling under the housing", "a drip from the seal", "wet insulation near the flange",
             "a falling level in the reservoir", "a hiss from the joint"],
    "overheating": ["a hot casing", "a high temperature alarm", "burnt smell near the motor",
                    "discoloured paint on the housing", "a thermal trip"],
    "vibration": ["a loud rattle", "shaking at the base", "a high vibration reading",
                  "loose mounting bolts", "a humming noise that rises with speed"],
    "electrical": ["a tripped breaker", "sparks at the terminal box", "a flickering panel light",
                   "a blown fuse", "no power at the starter"],
    "sensor": ["a frozen gauge reading", "a flatlined transmitter", "readings that jump at random",
               "a missing signal on the console", "a calibration drift warning"],
}
RESOLUTIONS = ["replaced the seal", "tightened the fittings", "cleaned the filter", "reset the controller",
               "replaced the bearing", "rewired the terminal", "recalibrated the sensor", "flushed the line"]
STEP_VERBS = ["close", "open", "check", "inspect", "lock", "drain", "vent", "record", "start", "stop"]
STEP_OBJECTS = ["the inlet valve", "the outlet valve", "the main breaker", "the oil level", "the pressure gauge",
                "the drain line", "the control panel", "the safety interlock", "the cooling water", "the filter"]
SYLLABLES = ["ka", "ro", "vin", "tel", "mar", "sol", "den", "bri", "lo", "zan", "pel", "dor", "ny", "gra",
             "fen", "tis", "hal", "mo", "rek", "sa", "vor", "lu", "quin", "ba", "te", "jor"]
FILLER = ["The shift log was updated at the end of the day.", "Visitors must sign in at the gate.",
          "The canteen opens at seven in the morning.", "Safety boots are required on the floor.",
          "The weekly meeting moved to the east hall.", "Spare parts are kept in the store room.",
          "The radio channel for operators is channel four.", "Forklifts keep to the marked lanes.",
          "Hearing protection is needed near the turbines.", "The fire drill is held every month."]
RECALL_OBJECTS = ["locker", "cabinet", "gate", "panel", "vault", "hatch"]
# Access codes are word pairs, not digit strings: a word is one token, so copying it back is the
# single-token look-up that a small model learns fast; digit strings need multi-token matching.
CODE_WORDS = ("amber azure birch cedar cobalt coral crimson dune ember fern flint frost garnet granite harbor hazel "
              "indigo ivory jade juniper lagoon lava lemon lilac linen maple marble meadow mint moss nectar oak ochre "
              "olive onyx opal orchid pebble pine plum quartz raven reed ruby rust saffron sage sand scarlet shadow "
              "silver slate spruce storm tide topaz umber velvet willow").split()


@dataclass
class Entity:
    name: str  # e.g. "Vindor-417"
    kind: str
    maker: str
    site: str
    team: str
    pressure: int  # bar
    temperature: int  # degrees
    interval: int  # maintenance interval, days
    year: int
    split: str = "train"
    incidents: list[dict] = field(default_factory=list)


def _word(rng: random.Random, n: int = 2) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(n))


def make_entity(rng: random.Random, kinds: list[str], makers: list[str]) -> Entity:
    return Entity(name=f"{_word(rng).capitalize()}-{rng.randint(100, 999)}", kind=rng.choice(kinds),
                  maker=rng.choice(makers), site=rng.choice(SITES), team=rng.choice(TEAMS),
                  pressure=rng.randint(2, 95), temperature=rng.randint(40, 390),
                  interval=rng.choice([7, 14, 30, 45, 60, 90, 120, 180]), year=rng.randint(1990, 2025))


def profile_doc(e: Entity) -> str:
    return (f"The {e.kind} {e.name} is made by {e.maker}. It is located in the {e.site}. "
            f"Its operating pressure is {e.pressure} bar. Its maximum temperature is {e.temperature} degrees. "
            f"It is serviced every {e.interval} days by the {e.team} team. It was installed in {e.year}.")


def qa_pairs(e: Entity) -> list[tuple[str, str]]:
    return [(f"What is the operating pressure of {e.name}?", f"{e.pressure} bar"),
            (f"Who makes {e.name}?", e.maker),
            (f"Where is {e.name} located?", f"the {e.site}"),
            (f"Which team services {e.name}?", f"the {e.team} team"),
            (f"What is the maximum temperature of {e.name}?", f"{e.temperature} degrees"),
            (f"How often is {e.name} serviced?", f"every {e.interval} days"),
            (f"When was {e.name} installed?", str(e.year))]


# The answer's lead for each profile question (`qa_pairs`): the question restated as the start of its
# answer ("The operating pressure of Vindor-417 is"), which an instruct model continues with the answer
# instead of a full sentence of its own, as recall items do with their `lead`.
QA_LEADS = [(re.compile(q), lead) for q, lead in [
    (r"What is the operating pressure of (.+)\?", "The operating pressure of {} is"),
    (r"Who makes (.+)\?", "{} is made by"),
    (r"Where is (.+) located\?", "{} is located in"),
    (r"Which team services (.+)\?", "{} is serviced by"),
    (r"What is the maximum temperature of (.+)\?", "The maximum temperature of {} is"),
    (r"How often is (.+) serviced\?", "{} is serviced"),
    (r"When was (.+) installed\?", "{} was installed in")]]


def qa_lead(question: str) -> str:
    """The lead of a profile question (`QA_LEADS`), or "" for a question of another shape."""
    for pattern, lead in QA_LEADS:
        m = pattern.fullmatch(question.strip())
        if m:
            return lead.format(m.group(1))
    return ""


def procedure_doc(rng: random.Random, e: Entity) -> str:
    steps = [f"{i}. {rng.choice(STEP_VERBS).capitalize()} {rng.choice(STEP_OBJECTS)}." for i in range(1, 6)]
    return f"Procedure to restart the {e.kind} {e.name}: " + " ".join(steps)


def incident(rng: random.Random, e: Entity) -> dict:
    category = rng.choice(sorted(CATEGORIES))
    symptoms = rng.sample(CATEGORIES[category], 2)
    text = (f"Incident report INC-{rng.randint(1000, 9999)} on the {e.kind} {e.name}. "
            f"Operators observed {symptoms[0]} and {symptoms[1]}. The {e.team} team {rng.choice(RESOLUTIONS)}.")
    return {"text": text, "category": category, "entity": e.name}


def qa_text(question: str, answer: str | None = None, lead: str = "") -> str:
    """The one question/answer format used in training, evaluation and prompts. `lead` starts the
    answer with a restatement of what is asked ("The access code for gate TE-11 is"), as passkey
    prompts do ("What is the pass key? The pass key is"); the model continues with the answer."""
    head = f"\nQuestion: {question}\nAnswer:" + (f" {lead}" if lead else "")
    return head + ("" if answer is None else f" {answer}\n")


@dataclass
class RecallFact:
    note: str  # "Note: the access code for gate TE-11 is ember maple."
    question: str  # "What is the access code for gate TE-11?"
    lead: str  # "The access code for gate TE-11 is"
    code: str  # "ember maple"


def recall_fact(rng: random.Random) -> RecallFact:
    obj = f"{rng.choice(RECALL_OBJECTS)} {_word(rng, 1).upper()}-{rng.randint(10, 99)}"
    code = f"{rng.choice(CODE_WORDS)} {rng.choice(CODE_WORDS)}"
    return RecallFact(f"Note: the access code for {obj} is {code}.", f"What is the access code for {obj}?",
                      f"The access code for {obj} is", code)


def recall_item(rng: random.Random, filler_sentences: int, facts: int = 1) -> dict:
    """Facts early, filler, then the first fact's question. Training items may carry extra facts,
    asked in `more`, which makes every item a lesson in picking the right fact to copy."""
    notes = [recall_fact(rng) for _ in range(facts)]
    parts = []
    for fact in notes:
        parts.append(fact.note)
        parts += [rng.choice(FILLER) for _ in range(filler_sentences // facts)]
    first, *more = rng.sample(notes, len(notes))
    return {"context": " ".join(parts), "question": first.question, "lead": first.lead, "answer": first.code,
            "more": [[f.question, f.lead, f.code] for f in more]}


def copy_drill(rng: random.Random) -> str:
    """A random string of names and digits, said twice: the second half is pure copying, the
    cheapest signal from which a small model learns to look back and copy (induction)."""
    words = [f"{rng.choice(CODE_WORDS)} {rng.choice(CODE_WORDS)}" for _ in range(rng.randint(2, 6))]
    return f"Repeat: {', '.join(words)}. Again: {', '.join(words)}."


def ood_text(rng: random.Random, sentences: int) -> str:
    """Out-of-domain prose (kitchen recipes) for out-of-domain perplexity."""
    foods = ["onion", "carrot", "rice", "butter", "garlic", "lemon", "bread", "cheese", "tomato", "pepper"]
    verbs = ["chop", "stir", "bake", "boil", "slice", "season", "grill", "whisk", "fold", "simmer"]
    return " ".join(f"{rng.choice(verbs).capitalize()} the {rng.choice(foods)} for {rng.randint(2, 30)} minutes "
                    f"and add a pinch of {rng.choice(foods)}." for _ in range(sentences))


def make_entities(seed: int, count: int, kinds: list[str] = KINDS, incidents: int = 2,
                  splits: tuple[float, float] = (0.15, 0.15)) -> list[Entity]:
    rng = random.Random(seed)
    makers = [f"{_word(rng).capitalize()} {rng.choice(['Works', 'Systems', 'Industries', 'Dynamics'])}"
              for _ in range(12)]
    entities, names = [], set()
    while len(entities) < count:
        e = make_entity(rng, kinds, makers)
        if e.name in names:
            continue
        names.add(e.name)
        e.incidents = [incident(rng, e) for _ in range(incidents)]
        entities.append(e)
    n_val, n_test = int(count * splits[0]), int(count * splits[1])
    for i, e in enumerate(entities):
        e.split = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    return entities


def fresh_entities(seed: int, count: int) -> list[Entity]:
    """Equipment of kinds the model never saw (the drifted topic): what the traffic simulator asks
    about and what retraining learns from are this one call, so they always agree."""
    return make_entities(seed, count, FRESH_KINDS, incidents=2, splits=(0.0, 0.0))


def entity_records(rng: random.Random, e: Entity) -> list[dict]:
    """The documents of one entity, each a record {id, entity, kind, split, text}."""
    docs = [("profile", profile_doc(e)), ("procedure", procedure_doc(rng, e))]
    docs += [("incident", inc["text"]) for inc in e.incidents]
    return [{"id": f"{e.name}/{kind}{i}", "entity": e.name, "kind": kind, "split": e.split, "text": text}
            for i, (kind, text) in enumerate(docs)]


def generate(seed: int, entities: int, incidents_per_entity: int, recall_items: int,
             recall_filler: tuple[int, int], ood_sentences: int, splits: tuple[float, float]) -> dict:
    """Build the whole corpus as plain records; the CLI writes them to JSONL files."""
    rng = random.Random(seed + 1)
    ents = make_entities(seed, entities, KINDS, incidents_per_entity, splits)
    docs = [d for e in ents for d in entity_records(rng, e)]
    qa = [{"entity": e.name, "split": e.split, "doc": profile_doc(e), "question": q, "answer": a}
          for e in ents for q, a in qa_pairs(e)]
    incidents = [{**inc, "split": e.split} for e in ents for inc in e.incidents]
    n_eval = max(1, recall_items // 10)
    splits_of = ["test" if i < n_eval else "val" if i < 2 * n_eval else "train" for i in range(recall_items)]
    recall = [{**recall_item(rng, rng.randint(*recall_filler), 1 if split != "train" else rng.randint(1, 3)),
               "split": split} for split in splits_of]
    return {"documents": docs, "qa": qa, "incidents": incidents, "recall": recall,
            "entities": [asdict(e) for e in ents], "ood": [ood_text(rng, 8) for _ in range(ood_sentences // 8 + 1)]}
