"""`kava inspect` / `kava.api.inspect`: latents read through the LM head, kept trace tokens, K/V cosines."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import matplotlib.image
import pytest
import torch
from conftest import build_model, save_kava_and_cot

from kava.api import generate, inspect
from kava.cli import main
from kava.inspection.heatmap import save_heatmap
from kava.inspection.kept_tokens import kept_mask
from kava.inspection.page import kept_page
from kava.inspection.similarity import cosine_map, kv_similarity
from kava.model.teacher_compression import teacher_targets

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _prefix(model, questions):
    p = model.builder.student_prefix(questions)
    return p["s_prefix_ids"], p["s_prefix_mask"]


@pytest.mark.parametrize("name, over, calls", [("kava", {}, 4), ("kava", {"num_iterations": 1}, 2),
                                                ("pause", {}, 1), ("codi", {"num_latents": 3}, 1)])
def test_observe_hook_sees_the_states_that_feed_the_next_pass_and_changes_nothing(name, over, calls, records, one_thread):
    model = build_model(name, **over)
    ids, mask = _prefix(model, [r.question for r in records])
    seen: list[torch.Tensor] = []
    with torch.no_grad():
        plain = model.latents(ids, mask)
        watched = model.latents(ids, mask, observe=seen.append)
    assert torch.equal(plain.latents, watched.latents) and plain.forward_passes == watched.forward_passes
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(plain.latent_kv, watched.latent_kv))
    M = model.config.num_latents
    assert len(seen) == calls and all(h.shape == (len(records), M, 64) for h in seen)
    if name != "pause":  # slot m + 1 of the last pass's input is φ(slot m's output of the pass before)
        with torch.no_grad():
            torch.testing.assert_close(model.project(seen[-2 if calls > 1 else 0][:, : M - 1]), watched.latents[:, 1:])


@pytest.mark.parametrize("name, passes", [("kava", ["init", "iter 1", "iter 2", "iter 3"]), ("pause", ["init"]),
                                          ("codi", ["sequential"])])
def test_top_k_per_pass_and_slot_is_sorted(name, passes, records, one_thread):
    model = build_model(name, num_latents=3)
    result = inspect(model, records[0].question, top_k=4)
    lat = result.latents
    assert lat.passes == passes and lat.probs.shape == lat.token_ids.shape == (len(passes), 3, 4)
    assert (lat.probs <= 1).all() and (lat.probs > 0).all() and (lat.probs.diff(dim=-1) <= 0).all()
    assert [[len(slot) for slot in p] for p in lat.tokens] == [[4] * 3] * len(passes)
    assert lat.tokens[0][0][0] == model.tokenizer.decode([int(lat.token_ids[0, 0, 0])])
    assert result.kept is None and result.similarity is None
    assert result.answer.text == generate(model, records[0].question).text


def test_kept_tokens_are_the_models_own_eviction(records, one_thread):
    model = build_model("kava", num_latents=5)
    r = records[0]
    result = inspect(model, r.question, list(r.steps), answer=r.answer)
    batch = model.builder.training_batch([r])
    targets = teacher_targets(model, batch).kv
    L, H = model.n_layers, model.n_kv_heads
    assert result.kept.kept.shape == (L, H, batch["t_input_ids"].shape[1])
    for l in range(L):
        for h in range(H):
            expected = sorted(targets.indices[l, 0, h][targets.slot_mask[0]].tolist())
            assert result.kept.kept[l, h].nonzero().flatten().tolist() == expected
    assert int(result.kept.counts.sum()) == L * H * 5
    assert not result.kept.kept[:, :, ~result.kept.cot].any()  # only trace tokens are ever kept
    assert result.kept.tokens == [model.tokenizer.decode([i]) for i in batch["t_input_ids"][0].tolist()]


def test_kept_mask_counts_only_matched_slots_of_a_padded_batch(records, one_thread):
    """M above the shortest trace: its unmatched slots (index 0) and the batch's padding stay unkept."""
    model = build_model("kava", num_latents=12)
    batch = model.builder.training_batch(records)
    targets = teacher_targets(model, batch).kv
    kept = kept_mask(targets.indices, targets.slot_mask, batch["t_input_ids"].shape[1])
    n_c = batch["t_cot_mask"].sum(-1)
    assert n_c.min() < 12 < n_c.max()
    assert torch.equal(kept.sum(-1), targets.slot_mask.sum(-1).view(1, -1, 1).expand_as(kept.sum(-1)))
    assert not (kept & ~batch["t_cot_mask"].view(1, len(records), 1, -1)).any()


def test_cosine_map_is_one_for_equal_entries_and_nan_for_unmatched_slots():
    x = torch.randn(2, 1, 2, 4, 16)
    slots = torch.tensor([[True, True, True, False]])
    same = cosine_map(x, 3 * x, slots)
    assert same.shape == (2, 1, 2, 4)
    torch.testing.assert_close(same[..., :3], torch.ones(2, 1, 2, 3))
    assert same[..., 3].isnan().all()
    assert torch.allclose(cosine_map(x, -x, slots)[..., :3], torch.tensor(-1.0))


def test_similarity_compares_what_the_kv_loss_compares(records, one_thread):
    """The maps are the cosines of the forward pass's own L_KV inputs (student K/V in kv_key_space
    against the compressed targets), averaged over KV heads; the targets against themselves give 1."""
    model = build_model("kava", num_latents=4, kv_key_space="pre_rope")
    r = records[0]
    result = inspect(model, r.question, list(r.steps), answer=r.answer)
    sim = result.similarity
    assert sim.keys.shape == sim.values.shape == (model.n_layers, 4)
    assert ((sim.keys >= -1) & (sim.keys <= 1)).all() and ((sim.values >= -1) & (sim.values <= 1)).all()
    with torch.no_grad():
        out = model(model.builder.training_batch([r]), return_internals=True)
    student, teacher = out.student, out.teacher.kv
    expected_k = cosine_map(student.k, teacher.k, teacher.slot_mask)[:, 0].mean(1)
    expected_v = cosine_map(student.v, teacher.v, teacher.slot_mask)[:, 0].mean(1)
    torch.testing.assert_close(sim.keys, expected_k, atol=1e-4, rtol=0)
    torch.testing.assert_close(sim.values, expected_v, atol=1e-4, rtol=0)
    targets = teacher_targets(model, model.builder.training_batch([r])).kv
    perfect = kv_similarity(targets.k, targets.v, targets, "pre_rope")
    torch.testing.assert_close(perfect.keys, torch.ones(model.n_layers, 4))


def test_a_model_without_l_kv_is_compared_with_the_targets_kava_would_give(records, one_thread):
    model = build_model("pccot", num_latents=3)
    r = records[1]
    result = inspect(model, r.question, list(r.steps))
    assert result.trace.answer == "15"  # the last step's result by default
    assert result.config.alpha_kv == 1.0 and model.config.alpha_kv == 0.0
    assert int(result.kept.counts.sum()) == model.n_layers * model.n_kv_heads * 3


def test_coconut_thoughts_are_read_out_and_compared_with_kavas_targets(records, one_thread):
    """Coconut has no teacher: its K·c thoughts are compared with what KaVa's eviction would keep,
    built without its curriculum (a training batch of Coconut's needs a stage)."""
    from kava.inspection.api import inspect_question

    model = build_model("coconut", thoughts_per_step=1, max_stage=3, num_latents=3, stage_steps=1)
    r = records[0]
    result = inspect_question(model, r.question, list(r.steps))
    assert result.config.curriculum == "none" and model.config.curriculum == "coconut"
    [thoughts] = result.latents.to_json()["passes"]  # sequential: one row of K·c thoughts
    assert thoughts["pass"] == "sequential" and len(thoughts["slots"]) == 3
    assert int(result.kept.counts.sum()) == model.n_layers * model.n_kv_heads * 3
    assert result.similarity.keys.shape == (model.n_layers, 3)


class _Page(HTMLParser):
    """Tracks open tags (void ones excluded) and the text of the token sequence."""

    VOID = frozenset({"meta", "br", "img", "hr", "link", "input"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.in_seq = False
        self.seq_text = ""
        self.text = ""

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)
        if ("class", "seq") in attrs:
            self.in_seq = True

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)
        if tag == "p":
            self.in_seq = False

    def handle_data(self, data):
        self.text += data
        if self.in_seq:
            self.seq_text += data


def test_html_page_is_balanced_and_escapes_the_tokens(records, one_thread):
    model = build_model("kava", num_latents=3)
    question = "Tom has 12 <b>apples</b> & 7 <script>pears</script>. How many?"
    result = inspect(model, question, ["<<12+7=19>>", "<<19*2=38>>"])
    page = kept_page(result)
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert not parser.errors and parser.stack == []
    assert "<script" not in page and "&lt;&lt;" in page
    assert parser.seq_text == "".join(result.kept.tokens)
    assert question in parser.text and "<<12+7=19>>" in parser.text


def test_heatmap_png_is_valid_with_unmatched_slots(tmp_path, records, one_thread):
    model = build_model("kava", num_latents=12)
    r = records[1]  # a trace shorter than 12 tokens: some slots have no target
    result = inspect(model, r.question, list(r.steps), answer=r.answer)
    assert result.similarity.keys.isnan().any()
    path = tmp_path / "map.png"
    save_heatmap(result.similarity, path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert matplotlib.image.imread(path).shape[0] > 100


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Tiny KaVa and CoT models saved with all weights (as `kava train` leaves them)."""
    return save_kava_and_cot(tmp_path_factory)


def test_cli_writes_every_file(saved, records, tmp_path, capsys, one_thread):
    r = records[0]
    out = tmp_path / "inspect"
    assert main(["inspect", "--model", str(saved["kava"].parent), "--question", r.question,
                 "--steps", *r.steps, "--top-k", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["inspection.json", "kept_tokens.html", "kv_similarity.png", "report.txt"]
    data = json.loads((out / "inspection.json").read_text())
    assert [p["pass"] for p in data["latents"]["passes"]] == ["init", "iter 1", "iter 2", "iter 3"]
    assert all(len(slot) == 3 for p in data["latents"]["passes"] for slot in p["slots"])
    assert len(data["kv_similarity"]["keys"]) == 2 and data["trace"]["answer"] == "42"
    assert (out / "report.txt").read_text() == printed.out and "kept trace tokens" in printed.out
    assert (out / "kv_similarity.png").read_bytes()[:8] == PNG_MAGIC

    # Without a trace: the latents only, the trace views skipped with a note, stale ones removed.
    assert main(["inspect", "--model", str(saved["kava"]), "--question", r.question, "--out", str(out)]) == 0
    assert "need one, skipped" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["inspection.json", "report.txt"]
    assert json.loads((out / "inspection.json").read_text())["kept_tokens"] is None


@pytest.mark.parametrize("argv, needle", [
    (["--model", "{tmp}/none"], "not a kava model folder"),
    (["--model", "{cot}"], "not trained to reason in latents"),
    (["--model", "{kava}", "--out", "{tmp}/file.txt"], "is a file"),
    (["--model", "{kava}", "--top-k", "0"], "--top-k must be >= 1"),
    (["--model", "{kava}", "--steps", "no numbers here"], "holds no number"),
    (["--model", "{kava}", "--steps", " ", "<<1+1=2>>"], "'steps'[0] is empty"),
])
def test_bad_input_is_one_line(saved, tmp_path, capsys, argv, needle, one_thread):
    (tmp_path / "file.txt").write_text("x")
    argv = [a.format(tmp=tmp_path, kava=saved["kava"], cot=saved["cot"]) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    assert main(["inspect", "--question", "How many?", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and err.startswith("kava inspect: error:")
    assert not (tmp_path / "out").exists()


def test_python_api_refuses_a_model_without_latents(one_thread):
    with pytest.raises(ValueError, match="not trained to reason in latents"):
        inspect(build_model("cot"), "How many?")
