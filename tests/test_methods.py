"""The method registry and the loss-term table: a method or a loss term is named in one place, and
the presets, the demo, the report and the bench read it there — with the behaviour they had before."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json

import pytest
import torch

from kava import losses
from kava.experiments import reports
from kava.config import PRESETS, KavaConfig, preset
from kava.experiments import demo_cli, demo_preset
from kava.demo.run import DemoSettings, train_config
from kava.experiments.results import collect
from kava.methods import METHODS, Method, benched, demo_methods, in_order, register
from kava.runtime.validation import ConfigError

# `kava.config.PRESETS` as it was spelt before the registry: every registered preset must equal it.
OLD_PRESETS = {
    "kava": {},
    "pccot": {"alpha_kv": 0.0},
    "codi": {"alpha_kv": 0.0, "latent_mode": "sequential", "num_latents": 6},
    "cot": {"student_ce": False, "alpha_codi": 0.0, "alpha_kv": 0.0, "teacher_drop_last_step": False},
    "nocot": {"student_ce": False, "alpha_codi": 0.0, "alpha_kv": 0.0, "teacher_uses_cot": False},
    "pause": {"num_iterations": 0, "teacher_ce": False, "alpha_codi": 0.0, "alpha_kv": 0.0},
}
OLD_LATENT = ("kava", "pccot", "codi", "pause")


def old_method_config(s: DemoSettings, method: str) -> KavaConfig:
    """`DemoSettings.method_config` as it was written before the registry, if-chains on names and all."""
    over = {"finetune": "full", "seed": 0}
    if method in OLD_LATENT:
        over.update(teacher_drop_last_step=s.teacher_drop_last_step, kv_key_space=s.kv_key_space,
                    selection_key_space=s.kv_key_space)
        if method in ("kava", "pccot", "codi"):
            over.update(alpha_codi=s.alpha_codi)
        if method != "codi":
            over.update(num_latents=s.num_latents, num_iterations=0 if method == "pause" else s.num_iterations)
        over.update(s.method_overrides)
    return KavaConfig(**{"method": method, **OLD_PRESETS[method], **over})


NEW = ("icot", "coconut")  # registered after the registry was made


def test_the_registry_holds_the_old_presets_in_their_order():
    assert list(METHODS) == list(PRESETS) == [*OLD_PRESETS, *NEW]
    assert {name: dict(knobs) for name, knobs in PRESETS.items() if name not in NEW} == OLD_PRESETS
    for name, knobs in OLD_PRESETS.items():
        assert preset(name) == KavaConfig(method=name, **knobs)
        assert preset(name, num_latents=4, eviction="crop") == KavaConfig(method=name, **{**knobs, "num_latents": 4,
                                                                                          "eviction": "crop"})
    with pytest.raises(ConfigError, match=r"^method\.preset: 'quiet-star' is not one of kava, pccot, codi, cot, nocot, pause, icot, coconut$"):
        preset("quiet-star")
    with pytest.raises(ValueError, match="already registered"):
        register(Method("kava"))


def test_every_list_of_methods_keeps_its_order():
    assert in_order() == ["nocot", "cot", "kava", "pccot", "codi", "pause", *NEW]  # the report's rows
    assert demo_methods() == DemoSettings().methods == ("nocot", "cot", "kava")
    assert demo_methods(full=True) == DemoSettings.full().methods == ("nocot", "cot", "kava", "pccot", "codi", "pause", *NEW)
    from kava.benchmark.bench import INFERENCE_RUNS, TRAIN_METHODS

    assert TRAIN_METHODS == ("kava", "pccot", "codi", "cot", "icot", "coconut")
    assert list(INFERENCE_RUNS.items()) == [("kava", ("kava", "latent")), ("cot", ("cot", "cot")),
                                            ("direct", ("nocot", "direct"))]
    assert [m.name for m in benched()] == ["kava", "pccot", "codi", "cot", "nocot", "icot", "coconut"]


def test_a_latent_method_is_one_whose_preset_trains_the_student():
    assert [m.name for m in METHODS.values() if m.latent] == [*OLD_LATENT, *NEW]
    for m in METHODS.values():  # iCoT has no student, but continues from the CoT model as they do
        assert m.latent == (preset(m.name).uses_student or m.name == "icot")
        assert set(m.keeps) <= {"num_latents", "num_iterations", "alpha_codi"}  # the demo recipe's knobs


@pytest.mark.parametrize("settings", [
    DemoSettings(), DemoSettings.full(),
    DemoSettings(num_latents=5, num_iterations=2, alpha_codi=0.5, teacher_drop_last_step=True, kv_key_space="post_rope",
                 method_overrides={"eviction": "crop"}),
], ids=["default", "full", "changed"])
def test_the_demo_builds_every_run_as_before(settings):
    for method in OLD_PRESETS:
        assert settings.method_config(method) == old_method_config(settings, method)
        phase = "latent" if method in OLD_LATENT else method
        cfg = train_config(settings, method, 0)
        assert (cfg.max_steps, cfg.lr) == (settings.steps[phase], settings.lr[phase])


@pytest.fixture
def kava_m4():
    """A throwaway baseline: KaVa with M = 4, kept in the demo too. One `register` call, no other file."""
    method = register(Method("kava-m4", {"num_latents": 4}, latent=True, keeps=("num_latents",)))
    yield method
    del METHODS[method.name]


def _demo_record(root, name: str, method: str) -> None:
    summary = {"accuracy": 0.5, "mean_forward_passes": 6.0, "mean_generated_tokens": 2.0, "mean_cache_tokens": 49.0,
               "mean_latency_s": 0.002}
    (root / "runs" / name).mkdir(parents=True)
    record = {"name": name, "method": method, "seed": 0, "variant": "base", "knobs": {}, "config": {},
              "summary": summary}
    (root / "runs" / name / "metrics.json").write_text(json.dumps(record))


def test_a_new_baseline_is_one_register_call(kava_m4, tmp_path, monkeypatch):
    assert "kava-m4" in PRESETS and preset("kava-m4") == KavaConfig(method="kava-m4", num_latents=4)
    # The demo: a --methods choice, trained from the CoT model with the demo's recipe but its own M.
    seen = {}
    monkeypatch.setattr(demo_preset, "run_demo", lambda out, settings, **kw: seen.update(settings=settings))
    parser = argparse.ArgumentParser()
    demo_cli.add_arguments(parser)
    assert demo_cli.run(parser.parse_args(["--methods", "cot,kava-m4"])) == 0
    assert seen["settings"].methods == ("cot", "kava-m4")
    s = DemoSettings()
    cfg = s.method_config("kava-m4")
    assert (cfg.num_latents, cfg.num_iterations, cfg.alpha_codi, cfg.kv_key_space) == (4, 3, 1.0, "pre_rope")
    assert train_config(s, "kava-m4", 0).max_steps == s.steps["latent"]
    assert "kava-m4" not in s.methods and "kava-m4" not in DemoSettings.full().methods  # joins only when asked
    # The report: its rows after the built-in methods'.
    for name, method in (("kava-m4-seed0", "kava-m4"), ("pause-seed0", "pause"), ("kava-seed0", "kava")):
        _demo_record(tmp_path, name, method)
    assert [r.method for r in collect(tmp_path).runs] == ["kava", "pause", "kava-m4"]


def test_the_loss_term_table_weights_the_trained_total():
    cfg = preset("kava", alpha_codi=2.0, alpha_kv=3.0)
    terms = {name: torch.tensor(float(i + 1)) for i, name in enumerate(("ce_teacher", "ce_student", "codi", "kv",
                                                                       "kv_mean_baseline"))}
    total = losses.weighted_total(terms, cfg, torch.zeros(()))
    assert total.item() == 1 + 2 + 2.0 * 3 + 3.0 * 4  # the baseline is logged, never trained
    knobs = {f.name for f in dataclasses.fields(KavaConfig)}
    assert all(t.weight in knobs for t in losses.TERMS.values() if t.weight)


def test_the_loss_term_table_drives_the_reports(monkeypatch):
    assert reports.LOSS_TERMS == ("loss", "ce_student", "ce_teacher", "codi", "kv")
    assert reports.BASELINES == {"kv": "kv_mean_baseline"} and reports.RATIOS == {"kv": "kv_vs_baseline"}
    monkeypatch.setitem(losses.TERMS, "align", losses.LossTerm("alpha_codi", ("teacher", "student")))
    monkeypatch.setitem(losses.TERMS, "align_floor", losses.LossTerm(None, baseline_of="align", label="a floor"))
    try:
        r = importlib.reload(reports)
        assert r.LOSS_TERMS[-1] == "align" and r.BASELINES["align"] == "align_floor"
        history = [{"step": 1, "loss": 1.0, "align": 0.5, "align_floor": 2.0}]
        assert r.final_losses({"row": [history]})["row"] == {"loss": 1.0, "align": 0.5, "align_floor": 2.0,
                                                             "align_vs_baseline": 0.25}
    finally:
        monkeypatch.undo()
        importlib.reload(reports)
