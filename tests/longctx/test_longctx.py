"""Long context on tiny models: RoPE math against the papers, NBCE, chunking, the suite."""
from __future__ import annotations

import math

import pytest


def _rope_model(head_dim: int = 64, trained: int = 4096):
    """A one-layer random LLaMA whose head size and context make YaRN's three regions non-empty."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32, hidden_size=2 * head_dim, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=trained)
    return LlamaForCausalLM(cfg).eval()


def _theta(base: float, d: int):
    import torch

    return base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # theta_i = base^(-2i/d)


def test_linear_interpolation_divides_every_frequency_by_the_factor():
    from lmops.longctx.rope import RopeConfig, inv_freq, scaled_copy

    model = _rope_model()
    freq, scale = inv_freq(scaled_copy(model, RopeConfig("linear", 4.0, 4096)))
    # Chen et al. 2023: f'(x, m) = f(x, m L/L') -- position m/s, i.e. every theta_i divided by s.
    assert freq.double().numpy() == pytest.approx((_theta(10000.0, 64) / 4).numpy(), rel=1e-5)
    assert scale == 1.0
    assert inv_freq(model)[0].double().numpy() == pytest.approx(_theta(10000.0, 64).numpy(), rel=1e-5)


def test_dynamic_ntk_grows_the_base_with_the_sequence_length():
    import torch

    from lmops.longctx.rope import RopeConfig, inv_freq, scaled_copy

    trained, s, d, L = 256, 8.0, 64, 1024
    model = scaled_copy(_rope_model(trained=trained), RopeConfig("dynamic", s, trained))
    within, _ = inv_freq(model)  # up to the trained length: the original frequencies
    assert within.double().numpy() == pytest.approx(_theta(10000.0, d).numpy(), rel=1e-5)
    model(input_ids=torch.zeros((1, L), dtype=torch.long))
    grown, _ = inv_freq(model)
    # Dynamic NTK (emozilla / bloc97): base' = base * ((s L / L0) - (s - 1)) ** (d / (d - 2)).
    base = 10000.0 * ((s * L / trained) - (s - 1)) ** (d / (d - 2))
    assert grown.double().numpy() == pytest.approx(_theta(base, d).numpy(), rel=1e-4)


def test_yarn_keeps_high_frequencies_interpolates_low_ones_and_scales_attention():
    from lmops.longctx.rope import RopeConfig, inv_freq, scaled_copy

    trained, s, d = 4096, 8.0, 64
    freq, scale = inv_freq(scaled_copy(_rope_model(d, trained), RopeConfig("yarn", s, trained)))
    theta = _theta(10000.0, d)
    # YaRN (Peng et al. 2023): r = L / lambda with wavelength lambda = 2 pi / theta; dims with r > beta = 32
    # keep theta, dims with r < alpha = 1 use theta / s, the ramp between mixes the two.
    r = trained * theta / (2 * math.pi)
    fast, slow = r > 32, r < 1
    assert fast.any() and slow.any() and (~fast & ~slow).any()
    assert freq.double()[fast].numpy() == pytest.approx(theta[fast].numpy(), rel=1e-5)
    assert freq.double()[slow].numpy() == pytest.approx((theta[slow] / s).numpy(), rel=1e-5)
    mid = ~fast & ~slow
    assert ((freq.double()[mid] <= theta[mid] * (1 + 1e-6)) & (freq.double()[mid] >= theta[mid] / s * (1 - 1e-6))).all()
    assert scale == pytest.approx(0.1 * math.log(s) + 1)  # sqrt(1/t) = 0.1 ln(s) + 1


def test_rope_config_rejects_bad_values():
    from lmops.longctx.rope import RopeConfig

    with pytest.raises(ValueError, match="factor"):
        RopeConfig("linear", 0.5, 256)
    with pytest.raises(ValueError, match="unknown"):
        RopeConfig("ntk", 2.0, 256)


def test_chunks_cover_the_text_with_the_requested_overlap():
    from lmops.longctx.chunking import ChunkConfig, chunk_ids

    ids = list(range(100))
    chunks = chunk_ids(ids, ChunkConfig(30, 10, 256))
    assert all(len(c) <= 30 for c in chunks)
    assert chunks[0][0] == 0 and chunks[-1][-1] == 99
    for a, b in zip(chunks, chunks[1:]):
        assert a[-10:] == b[:10]
    assert sorted(set(sum(chunks, []))) == ids


@pytest.mark.parametrize("size,overlap,context,msg", [(300, 10, 256, "larger than the model context"),
                                                      (32, 32, 256, "smaller than the chunk size"),
                                                      (32, 40, 256, "smaller than the chunk size")])
def test_bad_chunk_settings_are_clear_errors(size, overlap, context, msg):
    from lmops.longctx.chunking import ChunkConfig, ChunkingError

    with pytest.raises(ChunkingError, match=msg):
        ChunkConfig(size, overlap, context)


def test_stage_rejects_chunks_longer_than_the_context(tiny_params):
    from lmops.longctx.experiment import chunk_config
    from lmops.params import ParamsError

    lp = tiny_params.long_context.model_copy(update={"retrieval": tiny_params.long_context.retrieval.model_copy(
        update={"chunk_tokens": 200})})
    with pytest.raises(ParamsError, match="long_context.retrieval"):
        chunk_config(lp, 96)


def test_lengths_come_from_params_not_a_released_models_context():
    """A released model's 8,192-token context would make 65k-token prompts and a 16k fine-tune:
    long_context.trained_context overrides it and max_tokens refuses what the machine cannot run
    (issue 15 e)."""
    from types import SimpleNamespace

    from lmops.longctx.experiment import trained_context
    from lmops.params import LongContextParams, ParamsError

    real = SimpleNamespace(max_position_embeddings=8192)
    with pytest.raises(ParamsError, match="kb_multiple asks for 65,536-token"):
        trained_context(LongContextParams(), real)
    assert trained_context(LongContextParams(trained_context=1024), real) == 1024
    assert trained_context(LongContextParams(lengths=[1, 2], kb_multiple=1, finetune={"steps": 0}), real) == 8192
    assert trained_context(LongContextParams(), SimpleNamespace(max_position_embeddings=256)) == 256


def test_pooling_picks_the_lowest_entropy_chunk():
    import torch

    from lmops.longctx.nbce import entropy, nbce_combine, pool_min_entropy

    V = 10
    uniform = torch.full((V,), -math.log(V))
    peaked = torch.log_softmax(torch.tensor([0.0] * 7 + [9.0, 0.0, 0.0]), -1)
    medium = torch.log_softmax(torch.tensor([0.0, 2.0] + [0.0] * 8), -1)
    rows = torch.stack([uniform, medium, peaked, medium])
    assert entropy(rows)[2] < entropy(rows)[1] < entropy(rows)[0]
    assert pool_min_entropy(rows) == 2
    none = torch.log_softmax(torch.arange(V, dtype=torch.float), -1)
    expected = 1.25 * peaked - 0.25 * none
    assert torch.allclose(nbce_combine(rows, none, 0.25), expected)
    assert torch.allclose(nbce_combine(rows[2:3], none, 0.25), peaked)  # one chunk: beta clamps to n-1 = 0




def _stub_model():
    import torch

    class Out:
        def __init__(self, logits, past):
            self.logits, self.past_key_values = logits, past

    class Stub(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True,
                    logits_to_keep=0):
            if past_key_values is None:
                past_key_values = {"knows": (input_ids == 5).any(-1), "steps": 0}
            B, V = input_ids.shape[0], 12
            logits = torch.zeros((B, input_ids.shape[1], V))
            target = 7 if past_key_values["steps"] == 0 else 9
            logits[past_key_values["knows"], -1, target] = 10.0
            logits[~past_key_values["knows"], -1, 3] = 1.0  # a weak, wrong guess
            past_key_values["steps"] += 1
            return Out(logits, past_key_values)

    class Tok:
        pad_token_id, eos_token_id = 0, 1

        def decode(self, ids, skip_special_tokens=False):
            return "".join({7: "7", 9: "\n", 3: "3"}.get(i, "?") for i in ids)

    return Stub(), Tok()


def test_nbce_answers_from_the_one_chunk_that_knows():
    from lmops.longctx.nbce import NBCEConfig, nbce_generate

    model, tok = _stub_model()
    chunks = [[2, 2, 2], [2, 5, 2], [4, 4]]
    assert nbce_generate(model, tok, chunks, [8], NBCEConfig(beta=0.25, max_new_tokens=4)) == "7"
    assert nbce_generate(model, tok, [[2, 2]], [8], NBCEConfig(beta=0.25, max_new_tokens=1)) == "3"


def test_nbce_with_one_chunk_equals_plain_decoding(tiny_model, tiny_corpus):
    from lmops.longctx.nbce import NBCEConfig, nbce_generate
    from lmops.model.evaluate import generate_answers, qa_prompt

    model, tok = tiny_model
    rows = tiny_corpus.split(tiny_corpus.recall, "test")[:3]
    for r in rows:
        plain = generate_answers(model, tok, [qa_prompt(r["context"], r["question"])], max_new_tokens=6)[0]
        prompt = qa_prompt("", r["question"])
        assert nbce_generate(model, tok, [r["context"]], prompt, NBCEConfig(beta=0.5, max_new_tokens=6)) == plain


def test_nbce_sampling_is_seeded(tiny_model):
    from lmops.longctx.nbce import NBCEConfig, nbce_generate

    model, tok = tiny_model
    cfg = NBCEConfig(beta=0.25, max_new_tokens=5, sample=True, temperature=1.5, seed=3)
    chunks = ["The pump is made by Kaden Works.", "The valve is in the east hall."]
    assert nbce_generate(model, tok, chunks, "\nQuestion: Who?\nAnswer:", cfg) == \
        nbce_generate(model, tok, chunks, "\nQuestion: Who?\nAnswer:", cfg)


def test_passkey_items_fit_their_length_and_place_the_needle(tiny_model):
    from lmops.longctx.suite import passkey_suite

    _, tok = tiny_model
    items = passkey_suite(tok, 1, [384, 768], [0.0, 0.5, 1.0], 2, reserve=6)
    assert len(items) == 12
    for it in items:
        n = len(tok(it.context + it.prompt, add_special_tokens=False)["input_ids"])
        assert it.length // 2 < n <= it.length - 6 + 2  # +2: tokens may merge across the join
        assert it.gold in it.context and it.answer in it.gold
        at = it.docs.index(it.gold) / max(1, len(it.docs) - 1)
        assert len(it.docs) > 4 and abs(at - it.depth) < 0.15


def test_kb_items_use_fresh_entities_and_hide_the_answer_in_one_profile(tiny_model, tiny_corpus):
    from lmops.data.generate import FRESH_KINDS
    from lmops.longctx.suite import fresh_kb, kb_suite

    _, tok = tiny_model
    seen = {e["name"] for e in tiny_corpus.entities}
    ents, docs = fresh_kb(7, 12, seen)
    assert len(ents) == 12 and not seen & {e.name for e in ents}
    assert all(e.kind in FRESH_KINDS for e in ents)
    items = kb_suite(tok, 7, ents, docs, 5, 400, reserve=6)
    for it in items:
        assert it.gold in it.docs and it.answer in it.gold
        assert len(tok(it.context, add_special_tokens=False)["input_ids"]) > 200  # far beyond one profile


def _lp(probs):
    import torch

    return torch.tensor(probs, dtype=torch.float).log()


def test_top_p_keeps_the_smallest_nucleus_as_hf_does():
    import torch
    from transformers import TopPLogitsWarper

    from lmops.longctx.nbce import top_p_truncate

    lp = _lp([0.05, 0.5, 0.15, 0.3])
    assert torch.isfinite(top_p_truncate(lp, 0.9)).tolist() == [False, True, True, True]  # 0.5+0.3+0.15 >= 0.9
    assert torch.isfinite(top_p_truncate(lp, 0.8)).tolist() == [False, True, False, True]  # 0.5+0.3 reaches 0.8
    assert torch.isfinite(top_p_truncate(lp, 0.1)).tolist() == [False, True, False, False]  # the top token stays
    assert torch.equal(top_p_truncate(lp, 1.0), lp)
    kept = top_p_truncate(lp, 0.9)
    assert torch.equal(kept[torch.isfinite(kept)], lp[torch.isfinite(kept)])  # not renormalised
    rows = torch.log_softmax(torch.randn(5, 40), -1)
    for p in (0.3, 0.7, 0.95):
        hf = TopPLogitsWarper(p)(None, rows.clone())
        assert torch.equal(torch.isfinite(top_p_truncate(rows, p)), torch.isfinite(hf))


def test_reference_rule_picks_by_truncated_entropy_and_sticks():
    import torch

    from lmops.longctx.nbce import entropy, nbce_ref_combine, pool_min_entropy, top_p_truncate

    # A: one token at 0.8, 0.2 over 100 tail tokens; B: two tokens at 0.45, 0.1 over 1,000 tail tokens.
    # Full entropy prefers A (1.42 < 1.64 nats), but A's 0.9 nucleus keeps 50 tail tokens (0.80 nats)
    # while B's keeps its two tokens only (0.72 nats): the reference rule picks B.
    V = 1002
    a = torch.full((V,), 1e-12)
    a[0], a[1:101] = 0.8, 0.2 / 100
    b = torch.empty(V)
    b[:2], b[2:] = 0.45, 0.1 / 1000
    rows = torch.log_softmax(torch.stack([a, b]).log(), -1)
    none = torch.log_softmax(torch.zeros(V), -1)
    assert pool_min_entropy(rows) == 0  # the simplified rule: A
    assert entropy(top_p_truncate(rows, 0.9)).argmin() == 1  # truncated entropy: B
    _, k = nbce_ref_combine(rows, none, 0.25, 0.0, 0.9, None)
    assert k == 1
    gap = float(entropy(top_p_truncate(rows, 0.9))[0] - entropy(top_p_truncate(rows, 0.9))[1])
    assert 0 < gap < 5
    # Stickiness: A chosen at the previous step keeps it while its handicap is under eta.
    assert nbce_ref_combine(rows, none, 0.25, gap + 0.01, 0.9, prev=0)[1] == 0
    assert nbce_ref_combine(rows, none, 0.25, gap - 0.01, 0.9, prev=0)[1] == 1
    assert nbce_ref_combine(rows, none, 0.25, gap + 0.01, 0.9, prev=None)[1] == 1  # no previous: no bonus


def test_reference_rule_combines_only_inside_the_no_context_nucleus():
    import torch

    from lmops.longctx.nbce import nbce_ref_combine, top_p_truncate

    chunk = _lp([0.5, 0.3, 0.15, 0.05])[None]
    none = _lp([0.1, 0.7, 0.15, 0.05])  # its 0.8 nucleus: tokens 1 and 2
    out, k = nbce_ref_combine(chunk, none, 0.25, 0.1, 0.8, None)
    tc, tn = top_p_truncate(chunk[0], 0.8), top_p_truncate(none, 0.8)
    assert k == 0
    assert torch.allclose(out[1], 1.25 * tc[1] - 0.25 * tn[1])  # inside both nuclei: combined
    assert out[0] == tc[0]  # outside the no-context nucleus: the pooled chunk's own log-probability
    assert out[2] == float("-inf") and out[3] == float("-inf")  # outside the chunk's nucleus: dropped
    # beta is not clamped to n - 1 as in the simplified rule: one chunk is still corrected by the prior
    assert int(out.argmax()) == 0 and int(torch.log_softmax(chunk[0], -1).argmax()) == 0


def test_reference_rule_decodes_through_nbce_generate():
    from lmops.longctx.nbce import NBCERefConfig, nbce_generate

    model, tok = _stub_model()
    chunks = [[2, 2, 2], [2, 5, 2], [4, 4]]
    assert nbce_generate(model, tok, chunks, [8], NBCERefConfig(beta=0.25, max_new_tokens=4)) == "7"


def test_reference_settings_are_validated():
    from lmops.longctx.nbce import NBCERefConfig
    from lmops.params import LongContextParams

    with pytest.raises(ValueError, match="top_p"):
        NBCERefConfig(top_p=0.0)
    with pytest.raises(ValueError, match="eta"):
        NBCERefConfig(eta=-1)
    with pytest.raises(ValueError, match="top_p"):
        LongContextParams(nbce_ref={"top_p": 1.5})
    with pytest.raises(ValueError, match="nbce_ref"):
        LongContextParams(nbce_ref={"zeta": 1})


def test_chat_frame_puts_the_context_in_the_user_turn_and_the_lead_in_the_assistant_turn(tiny_model):
    """Through a chat template every method's row is head + context + tail, which decodes to the same
    prompt evaluation builds (`chat_qa_prompt`); KB questions get a restated lead (issue 15)."""
    import copy

    from lmops.longctx.methods.base import Context
    from lmops.longctx.suite import Item, answer_lead
    from lmops.model.evaluate import chat_qa_prompt

    tok = copy.deepcopy(tiny_model[1])
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    it = Item("kb-0", ["Pump P-1 is made by Kaden Works."], "Who makes Pump P-1?", "Kaden Works", "")
    ctx = Context(None, tok, 96, 4, chat=True)
    head, tail = ctx.frame(it)
    text = tok.decode(ctx.row(it, ctx.ids(it.context)))
    assert text == chat_qa_prompt(tok, it.context, it.question, "Pump P-1 is made by")
    assert text.index(it.context) < text.index("<|im_start|>assistant") and text.endswith("made by")
    assert ctx.room(it) == 96 - 4 - len(head) - len(tail)
    plain = Context(None, tok, 96, 4)
    assert plain.frame(it) == ([], plain.ids(it.prompt))  # no chat: the QA format, no lead added
    assert answer_lead("What is the operating pressure of Pump P-1?") == "The operating pressure of Pump P-1 is"
    assert answer_lead("When was Pump P-1 installed?") == "Pump P-1 was installed in"
    assert answer_lead("Why?") == ""
