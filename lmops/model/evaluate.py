"""Evaluation shared by every stage: sliding-window perplexity and greedy exact match."""
from __future__ import annotations

import math
import re

from lmops.data import Corpus
from lmops.data.generate import qa_lead, qa_text
from lmops.model.generate import first_line  # noqa: F401  (re-exported)
from lmops.model.generate import generate_texts as generate_answers  # noqa: F401  (the name callers use)


def token_stream(tokenizer, texts: list[str], max_tokens: int) -> list[int]:
    """Texts joined by EOS into one stream, cut to `max_tokens` (a fixed budget, for comparability)."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) >= max_tokens:
            break
    return ids[:max_tokens]


def perplexity(model, ids: list[int], max_length: int, stride: int | None = None, progress: bool = False) -> float:
    """Sliding-window perplexity (the Hugging Face recipe): each token is scored once, with up to
    `max_length - stride` tokens of extra left context."""
    import torch
    from tqdm.auto import tqdm

    stride = stride or max_length
    nll, count, prev_end = 0.0, 0, 0
    starts = range(0, max(1, len(ids) - 1), stride)
    with torch.no_grad():
        for begin in tqdm(starts, desc="perplexity", disable=not progress, leave=False):
            end = min(begin + max_length, len(ids))
            target_len = end - prev_end  # tokens not yet scored
            window = torch.tensor([ids[begin:end]], device=model.device)
            labels = window.clone()
            labels[:, :-target_len] = -100
            n = int((labels[:, 1:] != -100).sum())
            if n:
                nll += float(model(input_ids=window, labels=labels).loss) * n
                count += n
            prev_end = end
            if end == len(ids):
                break
    return math.exp(nll / max(1, count))


def normalize_answer(text: str) -> str:
    """Lower case, punctuation to spaces, whitespace collapsed: "Plum  linen." -> "plum linen"."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def answer_matches(prediction: str, answer: str) -> bool:
    """Whether a prediction gives `answer`: its normalized text starts with the normalized answer at a
    word boundary. An instruct model ends an answer with a period or goes on ("scarlet storm. The
    weekly..."), not always with a newline; "reddish" does not answer "red"."""
    pred, gold = normalize_answer(prediction), normalize_answer(answer)
    return bool(gold) and (pred == gold or pred.startswith(gold + " "))


def exact_match(predictions: list[str], answers: list[str]) -> float:
    """Share of predictions that give their answer (`answer_matches`): the exact match of every stage."""
    hits = sum(answer_matches(p, a) for p, a in zip(predictions, answers))
    return hits / max(1, len(answers))


def qa_prompt(context: str, question: str, lead: str = "") -> str:
    return context + qa_text(question, lead=lead)


CHAT_INSTRUCTION = "Answer with the words of the text."


def chat_qa_prompt(tokenizer, context: str, question: str, lead: str = "") -> str:
    """The open-book question as one user turn of the model's chat template; a `lead` ("The access code
    for gate TE-11 is") opens the assistant's answer, which the model continues."""
    from lmops.model.generate import chat_prompt

    return chat_prompt(tokenizer, f"{context.strip()}\n\nQuestion: {question}\n{CHAT_INSTRUCTION}", lead)


def kb_qa_items(corpus: Corpus, split: str, limit: int, tokenizer=None) -> tuple[list[str], list[str]]:
    """Open-book questions on entities of `split` (never trained on): profile document + question, in the
    QA format, or through `tokenizer`'s chat template when one is given, with the question's lead
    (`qa_lead`: "The operating pressure of Vindor-417 is") opening the assistant turn, so an instruct
    model completes the answer rather than writing a sentence of its own (as `recall_items` does)."""
    rows = corpus.split(corpus.qa, split)[:limit]
    if tokenizer is not None:
        return ([chat_qa_prompt(tokenizer, r["doc"], r["question"], qa_lead(r["question"])) for r in rows],
                [r["answer"] for r in rows])
    return [qa_prompt(r["doc"], r["question"]) for r in rows], [r["answer"] for r in rows]


def recall_items(corpus: Corpus, split: str, limit: int, tokenizer=None) -> tuple[list[str], list[str]]:
    rows = corpus.split(corpus.recall, split)[:limit]
    if tokenizer is not None:
        return ([chat_qa_prompt(tokenizer, r["context"], r["question"], r["lead"]) for r in rows],
                [r["answer"] for r in rows])
    return [qa_prompt(r["context"], r["question"], r["lead"]) for r in rows], [r["answer"] for r in rows]


def english_perplexity(model, tokenizer, path, context: int, max_tokens: int) -> float:
    """Held-out perplexity on a real English text file (paragraphs joined by EOS), `context`-token windows."""
    from lmops.io import InputError

    try:
        paras = [p.strip() for p in open(path, encoding="utf-8").read().split("\n\n") if p.strip()]
    except OSError as err:
        raise InputError(f"evaluate.english_text: cannot read {path}: {err}") from None
    return round(perplexity(model, token_stream(tokenizer, paras, max_tokens), context), 3)


def evaluate_base(model, tokenizer, corpus: Corpus, *, context: int, ppl_tokens: int, max_items: int,
                  max_new_tokens: int, split: str = "val", qa_split: str = "test",
                  progress: bool = True, chat: str = "auto") -> dict[str, float]:
    """The base model's report card (metrics/base.json), on data the model never trained on. With
    `chat="auto"` a model with a chat template is asked through it (an instruct model answers the
    bare QA format with nothing)."""
    from lmops.model.generate import has_chat_template

    templ = tokenizer if chat == "auto" and has_chat_template(tokenizer) else None
    texts = [d["text"] for d in corpus.split(corpus.documents, split)]
    ppl = perplexity(model, token_stream(tokenizer, texts, ppl_tokens), context, progress=progress)
    metrics = {"val_perplexity": round(ppl, 3), "uniform_perplexity": len(tokenizer)}
    metrics["chat_template"] = templ is not None
    for key, (prompts, answers) in {"recall_exact_match": recall_items(corpus, qa_split, max_items, templ),
                                    "kb_qa_exact_match": kb_qa_items(corpus, qa_split, max_items, templ)}.items():
        preds = generate_answers(model, tokenizer, prompts, max_new_tokens, progress=progress, desc=key)
        metrics[key] = round(exact_match(preds, answers), 4)
    return metrics
