"""KavaModel: padding invariance, gradient flow, latent iterations, GQA shapes, save/load."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from kava.compression import EVICTIONS
from kava.config import preset
from kava.model.sequences import positions_from_mask
from kava.model.kava_model import KavaModel, KavaOutput
from kava.model.cache import kv_of, stack
from kava.model.loading import ModelSource
from kava.model.rope import unrotate_keys
from kava.model.teacher_compression import teacher_targets

from conftest import ARCHS, build_model, make_tokenizer, tiny_model

ATOL = 1e-5


build = build_model


def example_view(out: KavaOutput, batch: dict, b: int) -> dict[str, torch.Tensor]:
    """Everything about example b that must not depend on its batch mates.

    Kept teacher entries are columns of the padded teacher sequence; they are compared as
    offsets from the example's first CoT column, which is what padding must not change.
    """
    view = {key: value[b] for key, value in out.per_example.items()}
    teacher, student = out.teacher, out.student
    if teacher is not None and teacher.kv is not None:
        mask = teacher.kv.slot_mask[b]
        view["slot_mask"] = mask
        view["teacher_k"] = teacher.kv.k[:, b][:, :, mask]
        view["teacher_v"] = teacher.kv.v[:, b][:, :, mask]
        first_cot = batch["t_cot_mask"][b].long().argmax()
        view["kept"] = teacher.kv.indices[:, b][:, :, mask] - first_cot
    if student is not None:
        view["student_k"] = student.k[:, b]
        view["student_v"] = student.v[:, b]
        if student.distill_hidden is not None:
            view["student_distill_hidden"] = student.distill_hidden[:, b]
            view["teacher_distill_hidden"] = teacher.distill_hidden[:, b]
    return view


def batched_and_alone(model, records):
    """(b, example b's view batched with the others, its view run alone) for every record."""
    batch = model.builder.training_batch(records)
    batched = model(batch, return_internals=True)
    for b, r in enumerate(records):
        single = model.builder.training_batch([r])
        alone = model(single, return_internals=True)
        yield b, example_view(batched, batch, b), example_view(alone, single, 0)


@pytest.mark.parametrize("shared", [True, False], ids=["shared_question", "own_question"])
@pytest.mark.parametrize("name", ["kava", "pccot", "codi"])
@pytest.mark.parametrize("arch", ARCHS)
def test_padding_invariance(name, arch, shared, records):
    """Batched with longer and shorter questions, an example's terms are those it gets alone."""
    model = build(name, arch, student_shares_question_cache=shared)
    assert model.config.shares_question_cache == shared
    with torch.no_grad():
        for b, mine, ref in batched_and_alone(model, records):
            assert mine.keys() == ref.keys()
            for key in ref:
                if ref[key].dtype == torch.bool or ref[key].dtype == torch.long:
                    assert torch.equal(mine[key], ref[key]), (name, b, key)
                else:
                    torch.testing.assert_close(mine[key], ref[key], atol=ATOL, rtol=1e-5, msg=f"{name} ex {b} {key}")


def trainable_grads(model: KavaModel) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("finetune", ["lora", "full"])
@pytest.mark.parametrize("name", ["kava", "codi"])
def test_shared_question_cache_matches_own_init_pass(name, finetune, records):
    """Without dropout, starting the student on the teacher's `[bos] Q` cache changes nothing:
    same loss terms and same gradients for every trainable parameter. Equal gradients also show
    the shared cache stays in the graph (detached, the student losses would not reach it)."""
    shared = build(name, finetune=finetune, num_latents=6).train()
    own = build(name, finetune=finetune, num_latents=6, student_shares_question_cache=False).train()
    own.load_state_dict(shared.state_dict())
    assert shared.config.shares_question_cache and not own.config.shares_question_cache
    batch = shared.builder.training_batch(records)
    assert len(set(batch["s_prefix_mask"].sum(-1).tolist())) == len(records)  # all question lengths differ
    outs = {}
    for key, model in (("shared", shared), ("own", own)):
        out = model(batch)
        out.loss.backward()
        outs[key] = ({k: v.detach() for k, v in {"loss": out.loss, **out.terms}.items()}, trainable_grads(model))
    (terms, grads), (ref_terms, ref_grads) = outs["shared"], outs["own"]
    assert terms.keys() == ref_terms.keys() and {"ce_student", "codi"} <= terms.keys()
    for k in ref_terms:
        torch.testing.assert_close(terms[k], ref_terms[k], atol=ATOL, rtol=1e-5, msg=k)
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    for n in ref_grads:
        torch.testing.assert_close(grads[n], ref_grads[n], atol=1e-5, rtol=1e-4, msg=n)


def test_student_loss_reaches_the_shared_question_cache(records):
    """The student CE alone trains the embedding rows of question-only tokens, which it can reach
    only through the teacher's question cache it runs on."""
    model = build("kava", finetune="full").train()
    batch = model.builder.training_batch(records)
    model(batch).terms["ce_student"].backward()
    question = batch["s_prefix_ids"][batch["s_prefix_mask"].bool()].unique()
    question = question[question < model.embedding.first_new_id]  # <bot> has its own trainable row
    question_only = question[~torch.isin(question, batch["s_answer_ids"])]
    assert len(question_only) > 0
    grad = model.embedding.base.weight.grad
    assert (grad[question_only].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("name, over", [("kava", {}), ("codi", {}), ("kava", {"num_iterations": 0})])
def test_latents_on_a_question_cache_equal_latents_from_scratch(name, over, records):
    """`run_latents` given the cache of `[bos] Q` runs only `<bot>` and gives the same state."""
    model = build(name, num_latents=4, **over)
    prefix = model.builder.student_prefix([r.question for r in records])
    ids, mask = prefix["s_prefix_ids"], prefix["s_prefix_mask"]
    with torch.no_grad():
        q_mask = mask[:, :-1]
        question = model.decode(model.embed(ids[:, :-1]), q_mask, positions_from_mask(q_mask), DynamicCache())
        on_cache = model.latents(ids, mask, kv_of(question.cache))
        scratch = model.latents(ids, mask)
    torch.testing.assert_close(on_cache.latents, scratch.latents, atol=ATOL, rtol=1e-5)
    real = scratch.attention_mask.bool()  # padded columns are never attended to and may differ
    for (k, v), (k_ref, v_ref) in zip(on_cache.kv, scratch.kv):
        torch.testing.assert_close(k.transpose(1, 2)[real], k_ref.transpose(1, 2)[real], atol=ATOL, rtol=1e-5)
        torch.testing.assert_close(v.transpose(1, 2)[real], v_ref.transpose(1, 2)[real], atol=ATOL, rtol=1e-5)
    for (k, v), (k_ref, v_ref) in zip(on_cache.latent_kv, scratch.latent_kv):
        torch.testing.assert_close(k, k_ref, atol=ATOL, rtol=1e-5)
        torch.testing.assert_close(v, v_ref, atol=ATOL, rtol=1e-5)
    assert torch.equal(on_cache.attention_mask, scratch.attention_mask)
    assert torch.equal(on_cache.next_position, scratch.next_position)
    assert on_cache.forward_passes == scratch.forward_passes


def test_short_cot_masks_latent_slots(records):
    model = build("kava", num_latents=6)
    kv = model(model.builder.training_batch(records), return_internals=True).teacher.kv
    # CoT lengths after dropping the last step differ; slots beyond N_C are masked.
    n_c = model.builder.training_batch(records)["t_cot_mask"].sum(-1)
    assert kv.slot_mask.sum(-1).tolist() == n_c.clamp(max=6).tolist()


def test_shapes_under_gqa(records):
    model = build("kava", num_latents=4)
    assert model.n_kv_heads == 2 and model.lm.config.num_attention_heads == 4
    out = model(model.builder.training_batch(records), return_internals=True)
    teacher, student = out.teacher.kv, out.student
    L, B, H, M, d = 2, len(records), 2, 4, 16
    for key, t in (("teacher_k", teacher.k), ("teacher_v", teacher.v), ("student_k", student.k), ("student_v", student.v)):
        assert t.shape == (L, B, H, M, d), key
    assert teacher.indices.shape == (L, B, H, M)
    assert student.distill_hidden.shape == (L, B, 64)


@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_flow(arch, records):
    # M > T + 1: with T >= M - 1 Jacobi has converged and the placeholders no longer matter.
    model = build("kava", arch, num_latents=6)
    model.train()
    out = model(model.builder.training_batch(records), return_internals=True)
    teacher = out.teacher
    for key, t in (("teacher_k", teacher.kv.k), ("teacher_v", teacher.kv.v), ("teacher_distill_hidden", teacher.distill_hidden)):
        assert not t.requires_grad, key
    assert out.per_example["ce_teacher"].requires_grad
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in grads) and any("projection" in n for n in grads)
    for n, g in grads.items():
        if "lora_" in n or "projection" in n:
            assert g is not None and g.abs().sum() > 0, n
    # <bot>, <eot> and <latent> rows all learn (the latent row via the init pass of Jacobi).
    rows = model.embedding.new_rows.grad
    assert rows is not None and (rows.abs().sum(-1) > 0).all()
    base = [p for n, p in model.named_parameters() if "lora_" not in n and "projection" not in n and "new_rows" not in n]
    assert base and all(not p.requires_grad and p.grad is None for p in base)


def test_teacher_ce_alone_has_gradient(records):
    model = build("cot")
    model.train()
    model(model.builder.training_batch(records)).loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_t0_is_pause_tokens(records):
    """T = 0: the answer is read from a cache over `Q <bot> <latent>×M`, exactly as plain tokens."""
    model = build("pause", num_latents=3)
    r = records[0]
    b = model.builder
    with torch.no_grad():
        ce_student = model(b.training_batch([r]), return_internals=True).per_example["ce_student"]
        ids = b.question_ids(r.question) + [b.bot_id] + [b.latent_id] * 3 + [b.eot_id] + b.prompt_ids + b.answer_ids(r.answer)
        ids_t = torch.tensor([ids])
        logits = model.logits(model.decode(model.embed(ids_t), torch.ones_like(ids_t), None, DynamicCache()).last_hidden_state)
        n_ans = len(b.prompt_ids) + len(b.answer_ids(r.answer))
        nll = torch.nn.functional.cross_entropy(logits[0, -n_ans - 1 : -1], ids_t[0, -n_ans:])
    torch.testing.assert_close(ce_student[0], nll, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("T", [4, 6])
def test_jacobi_to_fixed_point_equals_sequential(T, records):
    """Without φ, T ≥ M Jacobi iterations reach the latents of sequential generation."""
    jac = build("kava", num_latents=4, num_iterations=T, use_projection=False)
    seq = build("codi", num_latents=4, use_projection=False)
    seq.load_state_dict(jac.state_dict())
    prefix = jac.builder.student_prefix([r.question for r in records])
    with torch.no_grad():
        a = jac.latents(prefix["s_prefix_ids"], prefix["s_prefix_mask"])
        s = seq.latents(prefix["s_prefix_ids"], prefix["s_prefix_mask"])
    torch.testing.assert_close(a.latents, s.latents, atol=ATOL, rtol=1e-5)
    for (ka, va), (ks, vs) in zip(a.latent_kv, s.latent_kv):
        torch.testing.assert_close(ka, ks, atol=ATOL, rtol=1e-5)
        torch.testing.assert_close(va, vs, atol=ATOL, rtol=1e-5)
    assert torch.equal(a.next_position, s.next_position)


def test_jacobi_short_of_fixed_point_differs(records):
    jac = build("kava", num_latents=4, num_iterations=2, use_projection=False)
    seq = build("codi", num_latents=4, use_projection=False)
    seq.load_state_dict(jac.state_dict())
    prefix = jac.builder.student_prefix([r.question for r in records])
    with torch.no_grad():
        a = jac.latents(prefix["s_prefix_ids"], prefix["s_prefix_mask"]).latents
        s = seq.latents(prefix["s_prefix_ids"], prefix["s_prefix_mask"]).latents
    torch.testing.assert_close(a[:, :2], s[:, :2], atol=ATOL, rtol=1e-5)  # inputs of pass T: first T slots exact
    assert (a[:, 2:] - s[:, 2:]).abs().max() > 1e-3


def test_unrotate_recovers_pre_rope_keys():
    lm = tiny_model("llama")
    rotary = lm.get_decoder().rotary_emb
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    k = torch.randn(2, 2, 5, 16)
    pos = torch.tensor([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
    cos, sin = rotary(k, pos)
    _, k_rot = apply_rotary_pos_emb(k, k, cos, sin)
    torch.testing.assert_close(unrotate_keys(k_rot, pos, rotary), k, atol=1e-5, rtol=1e-5)


def test_pre_rope_keys_do_not_move_when_every_position_shifts(records):
    """RoPE attention sees only relative positions, so shifting every position leaves the hidden
    states, and so the unrotated keys, as they were; the cached (post-RoPE) keys move."""
    model = build("kava")
    batch = model.builder.training_batch(records)
    mask = batch["t_attention_mask"]
    pos = positions_from_mask(mask)
    decoder = model.lm.get_decoder()
    keys = {}
    with torch.no_grad():
        for shift in (0, 7):
            res = decoder(inputs_embeds=model.embed(batch["t_input_ids"]), attention_mask=mask, position_ids=pos + shift,
                          cache=DynamicCache(), use_cache=True)
            cached, _ = stack(kv_of(res.cache))
            keys[shift] = (cached, unrotate_keys(cached, pos + shift, decoder.rotary_emb))
    real = mask.bool().view(1, mask.shape[0], 1, -1, 1)
    torch.testing.assert_close(keys[0][1] * real, keys[7][1] * real, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(keys[0][0] * real, keys[7][0] * real, atol=1e-2)


def test_pre_rope_key_space_changes_what_is_matched(records):
    model = build("kava", kv_key_space="pre_rope")
    out = model(model.builder.training_batch(records), return_internals=True)
    assert torch.isfinite(out.student.k).all() and torch.isfinite(out.teacher.kv.k).all()
    post = build("kava")
    post_out = post(post.builder.training_batch(records), return_internals=True)
    assert not torch.allclose(out.student.k, post_out.student.k)


@pytest.mark.parametrize("name", ["kava", "pccot", "codi", "cot", "nocot", "pause"])
def test_every_preset_runs_and_reports_its_terms(name, records):
    model = build(name)
    out = model(model.builder.training_batch(records))
    expected = {
        "kava": {"ce_teacher", "ce_student", "codi", "kv", "kv_mean_baseline"},
        "pccot": {"ce_teacher", "ce_student", "codi"},
        "codi": {"ce_teacher", "ce_student", "codi"},
        "cot": {"ce_teacher"},
        "nocot": {"ce_teacher"},
        "pause": {"ce_student"},
    }[name]
    assert set(out.terms) == expected
    assert torch.isfinite(out.loss) and all(torch.isfinite(v) for v in out.terms.values())
    cfg = model.config
    total = sum(out.terms[k] * w for k, w in
                [("ce_teacher", 1), ("ce_student", 1), ("codi", cfg.alpha_codi), ("kv", cfg.alpha_kv)] if k in out.terms)
    torch.testing.assert_close(out.loss, total)


def test_the_kv_mean_baseline_is_logged_but_not_trained(records, monkeypatch):
    from kava import losses

    model = build("kava")
    batch = model.builder.training_batch(records)
    out = model(batch)
    assert 0 < out.terms["kv_mean_baseline"].item() and not out.terms["kv_mean_baseline"].requires_grad
    # Whatever the baseline's value, the loss (and so the gradient) stays the same.
    monkeypatch.setattr(losses, "kv_mean_baseline", lambda *args: torch.tensor(1e6))
    without = model(batch)
    assert without.terms["kv_mean_baseline"].item() == 1e6
    torch.testing.assert_close(without.loss, out.loss, atol=0, rtol=0)


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_save_and_load_round_trip(tmp_path, records, finetune):
    base_dir = tmp_path / "base"
    tiny_model("llama").save_pretrained(base_dir)
    make_tokenizer().save_pretrained(base_dir)
    source = ModelSource("local", str(base_dir))
    lm, tok = source.load()
    model = KavaModel(lm, tok, preset("kava", num_latents=3, lora_r=4, lora_dropout=0.0, finetune=finetune),
                      base_source=source).eval()
    with torch.no_grad():
        model.embedding.new_rows.add_(0.5)
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "kava_extra.safetensors").exists()
    loaded = KavaModel.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    batch = model.builder.training_batch(records)
    with torch.no_grad():
        a, b = model(batch), loaded(loaded.builder.training_batch(records))
    torch.testing.assert_close(a.loss, b.loss, atol=ATOL, rtol=1e-5)
    assert a.terms.keys() == b.terms.keys()
    for k in a.terms:
        torch.testing.assert_close(a.terms[k], b.terms[k], atol=ATOL, rtol=1e-5)


def test_positions_from_mask_left_and_right_padding():
    left = torch.tensor([[0, 0, 1, 1, 1]])
    right = torch.tensor([[1, 1, 1, 0, 0]])
    assert positions_from_mask(left)[0, 2:].tolist() == [0, 1, 2]
    assert positions_from_mask(right)[0, :3].tolist() == [0, 1, 2]
    assert positions_from_mask(right, torch.tensor([5]))[0, :3].tolist() == [5, 6, 7]


def test_lora_checkpoint_on_random_base_is_refused(tmp_path):
    model = build("kava")
    model.base_source = ModelSource("config", config=model.lm.config.to_dict())
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="base weights"):
        KavaModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("eviction", list(EVICTIONS))
def test_every_eviction_keeps_sorted_cot_entries_in_the_model(eviction, records):
    # rkv_recent and streamingllm_sinks below M = 4 (their defaults, 8 and 4, need a larger M)
    model = build("kava", eviction=eviction, num_latents=4, rkv_recent=1, streamingllm_sinks=2)
    batch = model.builder.training_batch(records)
    with torch.no_grad():
        kv = model(batch, return_internals=True).teacher.kv
    idx, slots = kv.indices, kv.slot_mask
    for b in range(len(records)):
        kept = idx[:, b][:, :, slots[b]]  # [L, H, n_kept]
        assert batch["t_cot_mask"][b][kept].all(), eviction
        assert (kept.diff(dim=-1) > 0).all(), eviction
    if eviction == "crop":
        first = batch["t_cot_mask"].float().argmax(-1)
        assert idx[0, 0, 0, 0] == first[0]


def test_shared_eviction_scope_keeps_the_top_mean_score_in_every_layer_and_head(records, monkeypatch):
    per_head = build("kava", num_latents=4, eviction_lambda=0.5)
    shared = build("kava", num_latents=4, eviction_lambda=0.5, eviction_scope="shared")
    batch = per_head.builder.training_batch(records)
    with torch.no_grad():
        own = per_head(batch, return_internals=True).teacher.kv.indices
        one = shared(batch, return_internals=True).teacher.kv.indices
    assert not (own == own[:1, :, :1]).all()  # the paper's picks differ between layers and heads
    assert (one == one[:1, :, :1]).all()  # shared: the same positions everywhere
    # ... and they are the top-4 of the per-head scores averaged over layers and heads. Both models
    # hold the same weights (same seed), so the per-head run's scores are the shared run's inputs.
    with torch.no_grad():
        scores = _eviction_scores(per_head, batch, monkeypatch)
    mean = scores.mean(dim=(0, 2)).masked_fill(~batch["t_cot_mask"], float("-inf"))  # [B, S]
    for b in range(len(records)):
        n = min(4, int(batch["t_cot_mask"][b].sum()))
        assert one[0, b, 0, :n].tolist() == sorted(mean[b].topk(n).indices.tolist())


def _eviction_scores(model, batch, monkeypatch) -> torch.Tensor:
    """The per-head keep scores [L, B, H, S] of one batch, captured from the compression step."""
    from kava import compression

    seen = []
    real = compression.select_entries
    monkeypatch.setattr(compression, "select_entries", lambda scores, cot, m: seen.append(scores) or real(scores, cot, m))
    model(batch)
    monkeypatch.undo()
    return seen[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_importance_from_kept_queries_equals_eager_attention_maps(arch, records, monkeypatch):
    """The teacher runs on SDPA and recomputes only the answer rows' attention; on the same weights,
    eager attention maps give the same importance (to 1e-6) and the same kept entries."""
    from kava import compression

    model = build("kava", arch, eviction="importance", num_latents=4)
    assert model.lm.config._attn_implementation == ("eager" if arch == "gemma2" else "sdpa")  # Gemma 2 has no SDPA
    batch = model.builder.training_batch(records)
    seen = []
    real = compression.importance_scores
    monkeypatch.setattr(compression, "importance_scores", lambda *a: seen.append(real(*a)) or seen[-1])
    with torch.no_grad():
        kept = model(batch, return_internals=True).teacher.kv.indices
        model.lm.set_attn_implementation("eager")
        mask = batch["t_attention_mask"]
        res = model.lm.get_decoder()(inputs_embeds=model.embed(batch["t_input_ids"]), attention_mask=mask,
                                     position_ids=positions_from_mask(mask), output_attentions=True)
    eager = real(torch.stack(res.attentions), batch["t_answer_mask"].bool(), model.n_kv_heads)
    torch.testing.assert_close(seen[0], eager, atol=1e-6, rtol=0)
    ref = compression.select_entries(eager, batch["t_cot_mask"], 4)
    assert torch.equal(kept, ref.indices)


@pytest.mark.parametrize("lam, named", [(1.0, "importance"), (0.0, "redundancy")])
def test_rkv_at_the_ends_of_lambda_is_the_named_variant(lam, named, records):
    """The eviction table's variants are R-KV at a fixed λ: same kept entries, same L_KV."""
    batch = build("kava").builder.training_batch(records)
    with torch.no_grad():
        rkv = build("kava", eviction="rkv", eviction_lambda=lam)(batch, return_internals=True)
        var = build("kava", eviction=named)(batch, return_internals=True)
    assert torch.equal(rkv.teacher.kv.indices, var.teacher.kv.indices)
    torch.testing.assert_close(rkv.terms["kv"], var.terms["kv"])


def test_config_choices_come_from_the_tables():
    from kava import compression, losses
    from kava.config import ConfigError

    for name in compression.EVICTIONS:
        assert preset("kava", eviction=name).eviction == name
    for name in losses.ELEMENTWISE:
        assert preset("kava", kv_loss=name, codi_loss=name).kv_loss == name
    with pytest.raises(ConfigError, match="method.eviction: 'lru' is not one of rkv, importance, redundancy, crop, random, rkv-official, snapkv, h2o, streamingllm"):
        preset("kava", eviction="lru")


def test_the_key_space_of_selection_and_of_matching_are_separate_knobs(records):
    """Matching pre-RoPE keys keeps the entries post-RoPE selection keeps; selecting on pre-RoPE
    keys is its own choice and keeps others (redundancy compares other vectors)."""
    batch = build("kava").builder.training_batch(records)
    with torch.no_grad():
        paper = build("kava", eviction="redundancy")(batch, return_internals=True).teacher.kv
        match_pre = build("kava", eviction="redundancy", kv_key_space="pre_rope")(batch, return_internals=True).teacher.kv
        both_pre = build("kava", eviction="redundancy", kv_key_space="pre_rope",
                         selection_key_space="pre_rope")(batch, return_internals=True).teacher.kv
    assert torch.equal(paper.indices, match_pre.indices)
    assert not torch.allclose(paper.k, match_pre.k)
    assert not torch.equal(match_pre.indices, both_pre.indices)
    assert match_pre.k.shape == both_pre.k.shape


def test_random_eviction_draws_per_example_whatever_the_batch(records):
    """Each example keeps the same random entries alone and batched (its own seed, its own CoT
    columns); two different examples draw differently."""
    model = build("kava", eviction="random", num_latents=2)
    with torch.no_grad():
        views = list(batched_and_alone(model, records))
    for b, mine, ref in views:
        assert torch.equal(mine["kept"], ref["kept"]), b
    offsets = [mine["kept"] for _, mine, _ in views]
    assert not all(torch.equal(offsets[0], o) for o in offsets[1:])


@pytest.mark.parametrize("teacher_dropout", [True, False])
def test_teacher_dropout_knob_makes_targets_deterministic(records, teacher_dropout):
    """In training mode with LoRA dropout, the paper's teacher pass draws new masks each time, so
    its targets differ between two passes over one batch; without teacher dropout they are equal
    (and equal to the eval-mode targets), while the teacher CE still trains LoRA."""
    model = build("kava", lora_dropout=0.5, teacher_dropout=teacher_dropout, num_latents=4).train()
    batch = model.builder.training_batch(records)
    first, second = (model(batch, return_internals=True) for _ in range(2))
    same = torch.equal(first.teacher.kv.k, second.teacher.kv.k) and torch.equal(
        first.teacher.distill_hidden, second.teacher.distill_hidden)
    assert same is (not teacher_dropout)
    if not teacher_dropout:
        with torch.no_grad():
            reference = teacher_targets(model.eval(), batch)
        torch.testing.assert_close(first.teacher.kv.k, reference.kv.k)
        assert model.train().lm.training  # the training mode came back after the teacher pass
    first.terms["ce_teacher"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def _lora_inputs(model: KavaModel, records) -> dict[str, torch.Tensor]:
    """What each LoRA A of the first decoder layer received (its dropped input) in one training forward."""
    seen: dict[str, torch.Tensor] = {}
    layer = model.lm.get_decoder().layers[0]

    def keep(name: str):
        def hook(_module, args, _out) -> None:
            seen.setdefault(name, args[0])
        return hook

    hooks = [module.lora_A["default"].register_forward_hook(keep(name)) for name, module in layer.named_modules() 
             if hasattr(module, "lora_A") and "default" in module.lora_A]
    torch.manual_seed(0)
    model(model.builder.training_batch(records))
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("masks", ["per_adapter", "per_input"])
def test_lora_dropout_masks_knob(masks, records):
    """per_input: q, k and v (and gate and up) see one dropped copy of their shared input.
    per_adapter is PEFT's: every adapter its own mask."""
    model = build("kava", lora_dropout=0.5, lora_dropout_masks=masks).train()
    seen = _lora_inputs(model, records)
    q, k, v = (seen[f"self_attn.{n}_proj"] for n in "qkv")
    gate, up = seen["mlp.gate_proj"], seen["mlp.up_proj"]
    shared = masks == "per_input"
    assert (q is k and k is v and gate is up) is shared
    assert torch.equal(q, k) is shared and torch.equal(gate, up) is shared
    assert (q == 0).float().mean().item() == pytest.approx(0.5, abs=0.05)  # still dropout at p
    model.eval()
    x = torch.randn(2, 3, 8)
    drop = model.lm.get_decoder().layers[0].self_attn.q_proj.lora_dropout["default"]
    assert drop(x) is x  # eval: identity


def test_shared_lora_dropout_trains_every_adapter(records):
    model = build("kava", lora_dropout=0.5, lora_dropout_masks="per_input").train()
    torch.manual_seed(0)
    model(model.builder.training_batch(records)).loss.backward()
    for name in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"):
        grads = [p.grad for n, p in model.named_parameters() if f"{name}.lora_A" in n]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), name
