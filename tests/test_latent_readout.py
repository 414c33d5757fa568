"""`kava inspect --dataset`: each latent slot's top-1 reading against its question's written trace."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_model, save_kava_and_cot

from kava.api import inspect
from kava.cli import main
from kava.data.multiplication import mult_line, mult_record
from kava.inspection import readout as ro

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PAIRS = [(1234, 5678), (4321, 8765), (1111, 2222), (9876, 5432), (3141, 5926)]


@pytest.fixture(scope="module")
def model():
    return build_model("kava", num_latents=4)


def test_counts_on_a_hand_made_case(model, monkeypatch):
    """Slot 1 always says its own sequence's token at position 2; slot 2 always the same fixed token;
    the rates against the own and the next question's sequence are counted by hand."""
    records = [mult_record(a, b, 4) for a, b in PAIRS[:3]]
    refs = [ro.reference_ids(model, r) for r in records]
    fixed = refs[0][0]
    never = model.builder.bot_id  # a special token no trace holds
    readings = torch.tensor([[ref[2], fixed, never, never] for ref in refs])
    monkeypatch.setattr(ro, "latent_readings", lambda m, q, b=100: (readings, "iter 3"))
    r = ro.latent_readout(model, records)
    P = max(map(len, refs))  # this tokenizer merges digits, so lengths differ
    assert r.questions == 3 and r.pass_label == "iter 3" and r.match.shape == (4, P)
    assert r.covered.tolist() == [sum(len(x) > p for x in refs) for p in range(P)]
    assert r.match[0, 2] == 1.0
    nxt = [refs[1], refs[2], refs[0]]
    by_hand = sum(refs[i][2] == nxt[i][2] for i in range(3)) / 3
    assert r.chance[0, 2].item() == pytest.approx(by_hand)
    for p in range(P):
        own = sum(len(refs[i]) > p and refs[i][p] == fixed for i in range(3)) / r.covered[p].item()
        assert r.match[1, p].item() == pytest.approx(own)
    assert (r.match[2:] == 0).all() and (r.in_own[2:] == 0).all() and r.in_own[0] == 1.0
    assert r.common[1] == (model.tokenizer.decode([fixed]).strip() or "␣", 1.0)  # a blank token shown as ␣
    p, rate, chance = r.best()[0]
    lift = r.match[0] - r.chance[0]
    assert lift[p] == lift.max() and rate == r.match[0, p].item() and chance == r.chance[0, p].item()
    n_trace = len(model.builder.cot_ids(records[0].steps, drop_last=False))
    assert r.labels[n_trace] == "a0" and len(r.labels) == P


def test_readings_are_the_single_question_inspection_and_do_not_depend_on_batch_mates(model):
    questions = [mult_record(a, b, 4).question for a, b in PAIRS] + ["7 * 8"]
    together, label = ro.latent_readings(model, questions, batch_size=6)
    alone = torch.cat([ro.latent_readings(model, [q], batch_size=1)[0] for q in questions])
    assert torch.equal(together, alone)
    one = inspect(model, questions[0], top_k=1).latents
    assert label == one.passes[-1] and together[0].tolist() == one.token_ids[-1, :, 0].tolist()


def test_sequences_of_different_lengths_count_only_where_they_reach(model, monkeypatch):
    records = [mult_record(12, 34, 2), mult_record(1234, 5678, 4)]
    refs = [ro.reference_ids(model, r) for r in records]
    assert len(refs[0]) < len(refs[1])
    readings = torch.tensor([[refs[0][0]] * 4, [refs[1][-1]] * 4])
    monkeypatch.setattr(ro, "latent_readings", lambda m, q, b=100: (readings, "iter 3"))
    r = ro.latent_readout(model, records)
    assert r.covered[: len(refs[0])].tolist() == [2] * len(refs[0]) and (r.covered[len(refs[0]):] == 1).all()
    assert r.match[0, -1] == 1.0  # one question reaches the last position, and its slot reads it


def test_fewer_than_two_records_is_refused(model):
    with pytest.raises(ValueError, match="at least 2 records"):
        ro.latent_readout(model, [mult_record(1234, 5678, 4)])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = save_kava_and_cot(tmp_path_factory)
    data = tmp_path_factory.mktemp("data") / "mult.txt"
    data.write_text("".join(mult_line(a, b, 4) + "\n" for a, b in PAIRS))
    out["data"] = data
    return out


def test_cli_writes_the_readout(saved, tmp_path, capsys, one_thread):
    out = tmp_path / "readout"
    assert main(["inspect", "--model", str(saved["kava"]), "--dataset", str(saved["data"]), "--limit", "4",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["latent_readout.png", "readout.json"]
    data = json.loads((out / "readout.json").read_text())
    assert data["questions"] == 4 and len(data["match"]) == 4 and len(data["best"]) == 4
    assert "latent read-out over 4 questions" in printed and printed.count("\nz") == 4
    assert (out / "latent_readout.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("argv, needle", [
    (["--limit", "1"], "--limit must be >= 2"),
    (["--dataset", "{tmp}/missing.txt"], "missing.txt"),
    (["--model", "{cot}"], "not trained to reason in latents"),
])
def test_bad_input_is_one_line(saved, tmp_path, capsys, argv, needle, one_thread):
    base = {"--model": str(saved["kava"]), "--dataset": str(saved["data"])}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value.format(tmp=tmp_path, cot=saved["cot"])
    args = [x for kv in base.items() for x in kv]
    assert main(["inspect", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and err.startswith("kava inspect: error:")
    assert not (tmp_path / "out").exists()
