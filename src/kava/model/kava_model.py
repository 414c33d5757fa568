"""`KavaModel`: a causal LM wrapped for KaVa training and inference.

It holds the base model (with LoRA adapters, or fully trainable), the latent projection φ, the
trainable rows of the new special tokens and the method config. ``forward`` runs the teacher
and student passes of one batch and returns every loss term (docs/method.md §5) in a `KavaOutput`.

The teacher pass and its cache compression are `kava.model.teacher_compression`; saving and loading,
`kava.model.persistence` (``save_pretrained`` / ``from_pretrained`` delegate to it); answering and
inspecting questions, `kava.api`. This module imports none of the layers above the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kava.config import KavaConfig
from kava.model.sequences import LATENT, SequenceBuilder, positions_from_mask
from kava.losses import TERMS, DistillTerm, batch_ce, term_on, token_ce, weighted_total
from kava.model import arch, persistence
from kava.model.cache import KV, cache_of, stack
from kava.model.latent import LatentState, Observer, run_latents
from kava.model.loading import ModelSource
from kava.model.lora_dropout import share_dropout_masks
from kava.model.projection import LatentProjection
from kava.model.rope import unrotate_keys
from kava.model.teacher_compression import TeacherTargets, states_at, teacher_pass
from kava.model.tokens import ExtendedEmbedding, add_special_tokens, rows_source


@dataclass
class StudentPass:
    """What the student's pass produced that the distillation terms compare (and inspection reads)."""

    k: torch.Tensor  # [L, B, H, M, d] latent keys in kv_key_space (`KavaModel.latent_kv`)
    v: torch.Tensor  # [L, B, H, M, d] latent values
    latents: torch.Tensor  # [B, M, D] latent input embeddings
    distill_hidden: torch.Tensor | None  # [L, B, D] at the last token of P, when L_CODI is on


@dataclass
class KavaOutput:
    """One training forward: the loss, the scalars logged with it, and what they were computed from."""

    loss: torch.Tensor  # the weighted total that is trained
    terms: dict[str, torch.Tensor]  # the other logged scalars, by their names in `kava.losses.TERMS`
    # With return_internals only. Per example [B], before batch normalisers: each pass's CE, codi, kv.
    per_example: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher: TeacherTargets | None = None  # when the teacher runs
    student: StudentPass | None = None  # when the student runs


class KavaModel(nn.Module):
    def __init__(self, lm, tokenizer, config: KavaConfig, base_source: ModelSource | None = None):
        super().__init__()
        self.arch = arch.architecture(lm.config)
        self.config = config
        self.tokenizer = tokenizer
        self.base_source = base_source
        first_new = add_special_tokens(tokenizer)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.builder = SequenceBuilder(tokenizer, config)
        self.latent_token_id: int = tokenizer.convert_tokens_to_ids(LATENT)
        hidden = lm.config.hidden_size
        self.n_layers: int = lm.config.num_hidden_layers
        self.n_kv_heads: int = lm.config.num_key_value_heads

        if config.lora_enabled:
            from peft import LoraConfig, get_peft_model

            for p in lm.parameters():
                p.requires_grad_(False)
            lora = LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=list(config.lora_targets),
                task_type="CAUSAL_LM",
            )
            self.peft = get_peft_model(lm, lora)
            # The causal LM with LoRA layers injected, kept as a plain attribute: it is registered
            # once, under `peft`. FSDP's auto-wrap walks the registered children and refuses a
            # module reached twice ("Child module ... is already wrapped").
            self.__dict__["lm"] = self.peft.base_model.model
            if config.lora_dropout_masks == "per_input":
                share_dropout_masks(self.lm, config.lora_dropout)
        else:
            self.peft = None
            self.lm = lm
        self.embedding = ExtendedEmbedding(self.lm.get_input_embeddings(), first_new, seed=config.seed,
                                           copy_of=rows_source(tokenizer, config.new_rows_init))
        if config.lora_enabled:
            self.embedding.base.weight.requires_grad_(False)
        self.projection = LatentProjection(hidden, config.projection_dim) if config.use_projection else None
        if self.projection is not None:
            self.projection.to(device=lm.device, dtype=lm.dtype)
        # Optional timing spans (name → context manager), set by `kava bench` to split a step into
        # teacher / eviction / student; None costs nothing.
        self.spans: Callable[[str], AbstractContextManager] | None = None

    # ---- building blocks shared by training and inference ------------------------------
    @property
    def device(self) -> torch.device:
        return self.embedding.new_rows.device

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return h if self.projection is None else self.projection(h)

    def decode(self, embeds, attention_mask, position_ids, cache, *, hidden_states=False):
        """One decoder pass without the LM head (latent passes never need logits).

        ``cache`` is a plain `DynamicCache` (or `cache_of`): one that keeps every entry, also in
        sliding-window layers (the attention mask applies the window), as compression needs the
        whole trace and the latents are appended after it.
        """
        return self.lm.get_decoder()(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
            output_hidden_states=hidden_states,
        )

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return arch.softcap(self.lm.get_output_embeddings()(hidden), arch.final_softcap(self.lm.config))

    def rotaries(self) -> list[arch.Rotary]:
        return arch.layer_rotaries(self.lm.get_decoder())

    @contextmanager
    def dropout(self, on: bool) -> Iterator[None]:
        """With ``on`` False, the block runs the model's layers in eval mode (no dropout), with
        gradients as before; the training mode is restored after."""
        if on or not self.lm.training:
            yield
            return
        self.lm.train(False)
        try:
            yield
        finally:
            self.lm.train(True)

    def span(self, name: str) -> AbstractContextManager:
        return nullcontext() if self.spans is None else self.spans(name)

    def latents(self, prefix_ids: torch.Tensor, prefix_mask: torch.Tensor, question_kv: KV | None = None,
                observe: Observer | None = None, num_latents: int | None = None) -> LatentState:
        return run_latents(self, prefix_ids, prefix_mask, question_kv, observe, num_latents)

    def latent_kv(self, state: LatentState) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's latent keys and values [L, B, H, M, d] as L_KV compares them with the
        compressed teacher cache: keys in ``kv_key_space`` (un-rotated at the latents' own positions
        for ``pre_rope``), values as cached."""
        ks, vs = stack(state.latent_kv)
        if self.config.kv_key_space == "pre_rope":
            M = ks.shape[3]
            lat_pos = (state.next_position - M).view(-1, 1) + torch.arange(M, device=ks.device).view(1, M)
            ks = unrotate_keys(ks, lat_pos, self.rotaries())
        return ks, vs

    # ---- training forward --------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor], return_internals: bool = False) -> KavaOutput:
        """Every loss term of one batch; ``loss`` is their weighted total (docs/method.md §5).

        With L_KV on, ``kv_mean_baseline`` is reported too, outside ``loss``: the L_KV a student
        that outputs the mean target would score (`kava.losses.kv_mean_baseline`), to read ``kv`` against.

        With ``return_internals`` the output also carries per-example terms and the tensors behind
        them (compressed teacher KV, student latent KV, distillation hidden states) for inspection.
        Training leaves them out: it would hold them into the next step, and DDP's search for unused
        parameters, which starts from every output tensor, would count graph pieces outside ``loss``
        (the CE of a pass whose CE term is off) as used.
        """
        cfg = self.config
        terms: dict[str, torch.Tensor] = {}
        per_example: dict[str, torch.Tensor] = {}
        teacher = teacher_kv = student = None
        if cfg.uses_teacher:
            teacher, per_example["ce_teacher"], teacher_kv = teacher_pass(self, batch, cfg)
            if cfg.teacher_ce:
                terms["ce_teacher"] = batch_ce(per_example["ce_teacher"], batch["t_ce_mask"], cfg.ce_average)
        if cfg.uses_student:
            with self.span("student"):
                student, per_example["ce_student"] = self._student(batch, teacher_kv if cfg.shares_question_cache else None)
            if cfg.student_ce:
                terms["ce_student"] = batch_ce(per_example["ce_student"], batch["s_ce_mask"], cfg.ce_average)
            for name, term in TERMS.items():  # the distillation terms and their logged baselines
                if term.compute is not None and term_on(name, cfg):
                    value = term.compute(teacher, student, cfg)
                    if isinstance(value, DistillTerm):
                        terms[name], per_example[name] = value.value, value.per_example
                    else:
                        terms[name] = value
        total = weighted_total(terms, cfg, torch.zeros((), device=self.device))
        if not return_internals:
            return KavaOutput(total, terms)
        return KavaOutput(total, terms, per_example, teacher, student)

    def _student(self, batch: dict[str, torch.Tensor], teacher_kv: KV | None) -> tuple[StudentPass, torch.Tensor]:
        """Student pass: latents, then the answer on their cache (→ the pass and its per-example CE);
        the teacher's cache, when given, stands in for the student's own pass over ``[bos] Q``
        (``shares_question_cache``)."""
        cfg = self.config
        prefix_ids = batch["s_prefix_ids"]
        question_kv = None
        if teacher_kv is not None:
            # The teacher's first columns are the student prefix without <bot> (sequences.py).
            n_q = prefix_ids.shape[1] - 1
            question_kv = [(k[:, :, :n_q], v[:, :, :n_q]) for k, v in teacher_kv]
        n_latents = int(batch["s_num_latents"]) if "s_num_latents" in batch else None  # a Coconut stage's
        state = self.latents(prefix_ids, batch["s_prefix_mask"], question_kv, num_latents=n_latents)
        ans_ids, ans_mask = batch["s_answer_ids"], batch["s_answer_mask"]
        mask = torch.cat([state.attention_mask, ans_mask], dim=1)
        pos = positions_from_mask(ans_mask, state.next_position)
        res = self.decode(self.embed(ans_ids), mask, pos, cache_of(state.kv), hidden_states=cfg.alpha_codi > 0)
        ce = token_ce(res.last_hidden_state, ans_ids, batch["s_ce_mask"], self.logits)
        k, v = self.latent_kv(state)
        hidden = states_at(res.hidden_states, batch["s_distill_index"]) if cfg.alpha_codi > 0 else None
        return StudentPass(k=k, v=v, latents=state.latents, distill_hidden=hidden), ce

    # ---- trainable state ---------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything that was trained, by name: adapter (or all weights), projection, new rows."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config, tokenizer, adapter and extras (safetensors; `kava.model.persistence.save`).
        Callers make it atomic."""
        persistence.save(self, directory)

    def load_trained(self, directory: str | Path) -> None:
        """Load the trained parts saved by ``save_pretrained`` into this (freshly built) model;
        a checkpoint that does not fit it is one `ValueError` (`kava.model.persistence.load_trained`)."""
        persistence.load_trained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str | torch.device = "cpu", dtype=torch.float32,
                        base_model=None) -> "KavaModel":
        """Rebuild a saved model (a model folder, a run or a checkpoint: `persistence.find_model_dir`):
        base model from its recorded source (or the one given), then trained parts."""
        return persistence.load(cls, directory, device=device, dtype=dtype, base_model=base_model)
