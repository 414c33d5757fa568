"""Recipe-fidelity knobs against transcriptions of the official code (docs/departures.md): each
knob's official value reproduces what the official loop computes, and kava's default is the
documented departure."""

from __future__ import annotations

import pytest
import torch

from kava.model.sequences import positions_from_mask

from conftest import build_model


def _coconut_loss(model, batch) -> torch.Tensor:
    """coconut.py's loss, transcribed: one pass over the padded batch, the labels -100 outside the
    targets, shifted by one, and ``CrossEntropyLoss()`` (the mean over every target token)."""
    ids, mask, targets = batch["t_input_ids"], batch["t_attention_mask"], batch["t_ce_mask"].bool()
    logits = model.lm(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
    labels = ids.masked_fill(~targets, -100)
    shift_logits, shift_labels = logits[..., :-1, :].contiguous(), labels[..., 1:].contiguous()
    return torch.nn.CrossEntropyLoss()(shift_logits.view(-1, shift_logits.size(-1)).float(), shift_labels.view(-1))


def test_token_averaged_ce_is_the_official_loss_and_example_averaging_differs(records):
    token = build_model("cot", ce_average="token")
    batch = token.builder.training_batch(records, step=0)  # three traces of different lengths, padded
    counts = batch["t_ce_mask"][:, 1:].sum(-1)
    assert len(set(counts.tolist())) == 3
    with torch.no_grad():
        official = _coconut_loss(token, batch)
        got = token(batch).terms["ce_teacher"]
        example = build_model("cot")(batch, return_internals=True)
    torch.testing.assert_close(got, official, atol=1e-6, rtol=1e-6)
    assert example.terms["ce_teacher"] == pytest.approx(example.per_example["ce_teacher"].mean().item(), abs=1e-7)
    # The departure on this batch (a random model's CEs are near ln V for every example, so it is small but real).
    gap = official.item() - example.terms["ce_teacher"].item()
    assert abs(gap) > 20 * torch.finfo(torch.float32).eps * official.item()


def test_token_averaging_weights_the_student_ce_by_answer_tokens(records):
    model = build_model("kava", ce_average="token")
    batch = model.builder.training_batch(records, step=0)
    with torch.no_grad():
        out = model(batch, return_internals=True)
    counts = batch["s_ce_mask"][:, 1:].sum(-1).float()
    expected = (out.per_example["ce_student"] * counts).sum() / counts.sum()
    torch.testing.assert_close(out.terms["ce_student"], expected)


def _adam_steps(run_dir) -> int:
    """AdamW's step count in the newest checkpoint (it restarts with a fresh optimizer)."""
    from kava.training.checkpoint import latest_checkpoint

    state = torch.load(latest_checkpoint(run_dir / "checkpoints") / "optimizer.bin", weights_only=True)
    return int(next(iter(state["state"].values()))["step"])


@pytest.mark.parametrize("reset,expected", [(True, 2), (False, 7)])
def test_the_optimizer_restarts_at_every_epoch(tmp_path, reset, expected):
    """Official Coconut (run.py, reset_optimizer: True) builds a new AdamW at every epoch. 10
    records, batch 4: the steps reading from positions 12 and 20 are the first of epochs 2 and 3,
    so after 7 steps a reset AdamW has taken 2 steps."""
    from kava.training.engine import train
    from conftest import TRAIN_RECORDS, train_config, training_model

    cfg = train_config(max_steps=7, save_every=7, reset_optimizer_every_epoch=reset)
    train(training_model(), TRAIN_RECORDS[:10], cfg, output_dir=tmp_path)
    assert _adam_steps(tmp_path) == expected


def test_an_epoch_reset_resumes_exactly_and_a_stream_is_refused(tmp_path):
    from kava.config import ConfigError
    from kava.training.engine import train
    from conftest import TRAIN_RECORDS, train_config, training_model

    cfg = train_config(max_steps=6, save_every=1, reset_optimizer_every_epoch=True)
    straight = train(training_model(), TRAIN_RECORDS[:10], cfg, output_dir=tmp_path / "a")
    train(training_model(), TRAIN_RECORDS[:10], cfg, output_dir=tmp_path / "b", stop_after=2)  # before the reset
    resumed = train(training_model(), TRAIN_RECORDS[:10], cfg, output_dir=tmp_path / "b", resume=True)
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6), a["step"]
    with pytest.raises(ConfigError, match="a record stream has no epochs"):
        train(training_model(), lambda seed, start: iter(TRAIN_RECORDS), cfg, output_dir=tmp_path / "c")


def test_a_checkpoint_written_before_a_train_setting_existed_resumes(tmp_path):
    import json

    from kava.training.checkpoint import STATE_FILE, latest_checkpoint
    from kava.training.engine import train
    from conftest import TRAIN_RECORDS, train_config, training_model

    cfg = train_config(max_steps=3, save_every=1)
    train(training_model(), TRAIN_RECORDS, cfg, output_dir=tmp_path, stop_after=1)
    state_file = latest_checkpoint(tmp_path / "checkpoints") / STATE_FILE
    state = json.loads(state_file.read_text())
    del state["train_config"]["reset_optimizer_every_epoch"]  # as a checkpoint of an older kava
    state_file.write_text(json.dumps(state))
    assert train(training_model(), TRAIN_RECORDS, cfg, output_dir=tmp_path, resume=True).step == 3


def test_a_step_longer_than_max_train_length_is_skipped_as_icots_max_len_train(tmp_path):
    """Official iCoT (src/train.py): ``if max_len_train > 0 and input_ids.shape[-1] > max_len_train:
    continue`` — no update for a batch whose padded sequence is too long. kava skips the whole step
    (every micro-batch of it) and keeps counting it."""
    from itertools import islice

    from safetensors.torch import load_file

    from kava.training.data_order import record_order
    from kava.training.engine import sequence_length, train
    from conftest import TRAIN_RECORDS, train_config, training_model

    model = training_model()
    cfg = train_config(max_steps=6, save_every=1, keep_last=6)
    order = record_order(TRAIN_RECORDS, cfg.seed)
    lengths = []
    for step in range(cfg.max_steps):  # the padded length of each step, as the engine builds it
        records = list(islice(order, cfg.batch_size))
        chunks = [records[i:i + cfg.micro_batch_size] for i in range(0, cfg.batch_size, cfg.micro_batch_size)]
        lengths.append(max(sequence_length(model.builder.training_batch(c, step)) for c in chunks))
    limit = sorted(lengths)[len(lengths) // 2]
    skipped = [n > limit for n in lengths]
    assert 0 < sum(skipped) < len(skipped)

    import dataclasses

    result = train(model, TRAIN_RECORDS, dataclasses.replace(cfg, max_train_length=limit), output_dir=tmp_path)
    assert [bool(e.get("skipped")) for e in result.history] == skipped
    weights = [load_file(tmp_path / "checkpoints" / f"ckpt-{k}" / "model" / "adapter_model.safetensors")
               for k in range(1, 7)]
    for k in range(1, 6):  # step k+1 changed the weights exactly when it was not skipped
        unchanged = all((weights[k][n] == weights[k - 1][n]).all() for n in weights[k])
        assert unchanged == skipped[k], k
    straight = train(training_model(), TRAIN_RECORDS, cfg, output_dir=tmp_path / "straight")
    assert [e["lr"] for e in result.history] == [e["lr"] for e in straight.history]  # the schedule counts every step


def test_coconut_from_stage_1_refuses_a_source_that_is_not_cot_trained(tmp_path):
    from pathlib import Path

    from kava.config import ConfigError, preset
    from kava.model.persistence import CONFIG_FILE
    from kava.training.from_config import check_cot_start
    from kava.training.run_config import load_run_config

    config = Path(__file__).resolve().parents[1] / "configs" / "llama1b-aug-coconut.yaml"
    with pytest.raises(ConfigError, match="model.source: Coconut from stage 1 starts from a CoT-trained model"):
        check_cot_start(load_run_config(config))  # the shipped file names the instruct model
    cot, kava = tmp_path / "cot-export", tmp_path / "kava-export"
    for folder, name in ((cot, "cot"), (kava, "kava")):
        folder.mkdir()
        preset(name).save(folder / CONFIG_FILE)  # what save_pretrained and --export write
    check_cot_start(load_run_config(config, [f"model.source={cot}"]))  # a kava CoT export
    with pytest.raises(ConfigError, match="is not a kava CoT model"):
        check_cot_start(load_run_config(config, [f"model.source={kava}"]))
    check_cot_start(load_run_config(config, ["model.cot_trained=true"]))  # declared, trained outside kava
    check_cot_start(load_run_config(config, ["method.start_stage=0"]))  # the run trains the CoT stage itself
    check_cot_start(load_run_config(config, ["method={preset: kava}"]))  # KaVa trains its teacher jointly


def test_new_rows_copy_a_named_tokens_row_as_official_coconut(records):
    """Official Coconut (run.py): ``embeddings.weight.data[token_id] = embeddings.weight.data[target_id]``
    for the latent, start and end tokens, target ``<<``; kava's ``copy:<text>`` does the same."""
    from kava.config import ConfigError
    from kava.model.sequences import SPECIAL_TOKENS

    model = build_model("coconut", num_latents=6, new_rows_init="copy:<")
    tok = model.tokenizer
    (target,) = tok.encode("<", add_special_tokens=False)
    new_ids = torch.tensor([tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS])
    with torch.no_grad():
        rows, row = model.embed(new_ids.view(1, -1))[0], model.embed(torch.tensor([[target]]))[0, 0]
    for r in rows:
        torch.testing.assert_close(r, row, rtol=0, atol=0)
    default = build_model("coconut", num_latents=6)
    with torch.no_grad():
        rows = default.embed(new_ids.view(1, -1))[0]
    assert not torch.equal(rows[0], rows[1])  # mean: distinct rows near the mean embedding
    with pytest.raises(ConfigError, match="method.new_rows_init: 'abc' is 3 tokens"):
        build_model("coconut", num_latents=6, new_rows_init="copy:abc")
    with pytest.raises(Exception, match="expected mean or copy"):
        build_model("coconut", num_latents=6, new_rows_init="copy:")
