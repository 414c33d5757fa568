"""The full KaVa objective on real pretrained weights: SmolLM2-135M-Instruct (9 query / 3 KV heads)."""

from __future__ import annotations

import pytest
import torch

from kava.config import preset
from kava.model.kava_model import KavaModel
from kava.model.loading import smollm2_source

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    return smollm2_source().load()


def test_kava_objective_on_smollm2(smollm2, records):
    lm, tok = smollm2
    assert (lm.config.num_attention_heads, lm.config.num_key_value_heads) == (9, 3)
    torch.manual_seed(0)
    model = KavaModel(lm, tok, preset("kava", num_latents=6, lora_r=8, lora_dropout=0.0))
    model.train()
    batch = model.builder.training_batch(records)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    totals = []
    for _ in range(4):
        out = model(batch)
        assert set(out.terms) == {"ce_teacher", "ce_student", "codi", "kv", "kv_mean_baseline"}
        assert torch.isfinite(out.loss) and all(torch.isfinite(v) for v in out.terms.values()), out.terms
        totals.append(out.loss.item())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    print("smollm2 kava totals:", totals)
    assert totals[-1] < totals[0]
