"""`KavaModel`: a causal LM wrapped for KaVa training and inference.

It holds the base model (with LoRA adapters, or fully trainable), the latent projection φ, the
trainable rows of the new special tokens and the method config. ``forward`` runs the teacher
and student passes of one batch and returns every loss term (docs/method.md §5) in a `KavaOutput`;
``save_pretrained`` / ``from_pretrained`` store and restore exactly what was trained, in safetensors.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import DynamicCache
from safetensors.torch import load_file, save_file
from torch import nn

from kava import compression
from kava.config import KavaConfig
from kava.data.sequences import LATENT, SequenceBuilder, positions_from_mask
from kava.layout import CHECKPOINT_MODEL, CHECKPOINT_PREFIX, CHECKPOINTS, FINAL
from kava.losses import codi_loss, kv_loss, kv_mean_baseline, token_ce, weighted_total
from kava.model import arch
from kava.model.cache import KV, cache_of, kv_of, stack
from kava.model.latent import LatentState, Observer, run_latents
from kava.model.loading import BASE_FILE, ModelSource
from kava.model.lora_dropout import share_dropout_masks
from kava.model.projection import LatentProjection
from kava.model.queries import capture_queries
from kava.model.rope import rotate, unrotate_keys
from kava.model.tokens import ExtendedEmbedding, add_special_tokens

CONFIG_FILE = "kava_config.json"
EXTRA_FILE = "kava_extra.safetensors"  # projection + new-token rows
FULL_FILE = "model.safetensors"  # full fine-tuning: all weights


def states_at(hidden_states: tuple[torch.Tensor, ...], index: torch.Tensor) -> torch.Tensor:
    """Every transformer layer's hidden state at one position per example: [L, B, D].

    Each layer's position is picked before stacking: stacking whole layers first would build an
    [L, B, S, D] copy (46 MB per pass on SmolLM2, a fresh mmap and its page faults every call)."""
    rows = torch.arange(index.shape[0], device=index.device)
    return torch.stack([h[rows, index] for h in hidden_states[1:]])  # index 0 is the embedding output


@dataclass
class CompressedKV:
    """The teacher's kept CoT entries: M per layer and KV head (docs/method.md §4)."""

    k: torch.Tensor  # [L, B, H, M, d] keys in the space L_KV compares (kv_key_space)
    k_cached: torch.Tensor  # the same entries as the cache holds them (post-RoPE)
    v: torch.Tensor  # [L, B, H, M, d]
    slot_mask: torch.Tensor  # [B, M] slots matched with a real CoT entry
    indices: torch.Tensor  # [L, B, H, M] their columns in the teacher sequence, ascending


@dataclass
class TeacherTargets:
    """The stop-gradient targets of one batch: what the student's distillation terms compare against."""

    kv: CompressedKV | None = None  # when L_KV is on
    distill_hidden: torch.Tensor | None = None  # [L, B, D] at the last token of P, when L_CODI is on


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


def find_model_dir(path: str | Path) -> Path:
    """The kava model folder in ``path``: the folder itself, a run's ``final/`` (else its newest
    checkpoint's model), or a checkpoint's ``model/``. An export is a model folder itself."""
    p = Path(path)
    for candidate in (p, p / FINAL, p / CHECKPOINT_MODEL):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    steps = sorted(
        (int(c.name[len(CHECKPOINT_PREFIX):]), c / CHECKPOINT_MODEL)
        for c in (p / CHECKPOINTS).glob(f"{CHECKPOINT_PREFIX}*") if c.name[len(CHECKPOINT_PREFIX):].isdigit()
    )
    for _, candidate in reversed(steps):  # the newest checkpoint first
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"{p}: not a kava model folder, run or checkpoint ({CONFIG_FILE} missing)")


def example_seeds(ids: torch.Tensor, mask: torch.Tensor, seed: int) -> list[int]:
    """A seed per example from its own tokens (padding excluded) and the config seed: the same
    example always draws the same numbers, whatever it is batched with."""
    return [zlib.crc32(row[keep].cpu().numpy().tobytes(), seed) for row, keep in zip(ids, mask.bool())]


def _check_shapes(d: Path, saved: dict[str, torch.Tensor], model: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Refuse, in one line, saved tensors whose shapes differ from the model's (another base model)."""
    for name, tensor in saved.items():
        if name in model and tuple(model[name].shape) != tuple(tensor.shape):
            raise ValueError(f"{d}: {prefix}{name} is {list(tensor.shape)} in the checkpoint but {list(model[name].shape)} "
                             "in this model: it was trained on another base model or configuration")


def _first_mismatch(error: RuntimeError) -> str:
    lines = [line.strip() for line in str(error).splitlines() if "size mismatch" in line]
    return lines[0].rstrip(".") if lines else " ".join(str(error).split())[:200]


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
            self.lm = self.peft.base_model.model  # the causal LM with LoRA layers injected
            if config.lora_dropout_masks == "per_input":
                share_dropout_masks(self.lm, config.lora_dropout)
        else:
            self.peft = None
            self.lm = lm
        self.embedding = ExtendedEmbedding(self.lm.get_input_embeddings(), first_new, seed=config.seed)
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

    def _rotaries(self) -> list[arch.Rotary]:
        return arch.layer_rotaries(self.lm.get_decoder())

    @contextmanager
    def _dropout(self, on: bool) -> Iterator[None]:
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

    def _span(self, name: str) -> AbstractContextManager:
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
            ks = unrotate_keys(ks, lat_pos, self._rotaries())
        return ks, vs

    def generate(self, questions: str | Sequence[str], *, mode: str | None = None, temperature: float | None = None,
                 top_p: float = 1.0, seed: int = 0, max_new_tokens: int | None = None, batch_size: int = 32,
                 inspect: bool = False):
        """Answer one question (→ an `Answer`) or several (→ a list), greedily unless ``temperature``.

        ``mode``: ``latent``, ``cot`` or ``direct``; default the mode the model was trained for.
        Each answer carries its text, the number read from it, forward passes, tokens and latency
        (`kava.evaluation.answering`, the decoding `kava eval` uses); with ``inspect`` in latent
        mode also ``.inspection``, its latents read as tokens (`inspect`, no reference trace).
        """
        from kava.evaluation.answering import answer_questions
        from kava.evaluation.decoding import Sampling

        sampling = None if temperature is None else Sampling(temperature, top_p, seed)
        single = isinstance(questions, str)
        answers = answer_questions(self, [questions] if single else list(questions), mode=mode, sampling=sampling,
                                   max_new_tokens=max_new_tokens, batch_size=batch_size)
        if inspect and answers and answers[0].mode == "latent":
            from dataclasses import replace

            from kava.inspection.api import inspect_question

            for a in answers:  # a sampled answer is not the greedy one the inspection reports (a copy: no cycle)
                a.inspection = inspect_question(self, a.question, reply=None if sampling else replace(a))
        return answers[0] if single else answers

    def inspect(self, question: str, steps: Sequence[str] | None = None, *, answer: str | None = None, top_k: int = 5):
        """Look inside the latents on one question (→ `kava.inspection.Inspection`, what ``kava inspect`` shows).

        Always: every latent slot read through the LM head after the init pass and each Jacobi
        iteration (top ``top_k``). With a reference trace ``steps`` (and its ``answer``, by default
        the last step's result): which trace tokens the eviction keeps per layer and KV head, and
        the cosine of the student's latent K/V against those compressed teacher entries.
        """
        from kava.inspection.api import inspect_question

        return inspect_question(self, question, steps, answer, top_k)

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
            teacher, per_example["ce_teacher"], teacher_kv = self._teacher(batch, cfg)
            if cfg.teacher_ce:
                terms["ce_teacher"] = per_example["ce_teacher"].mean()
        if cfg.uses_student:
            with self._span("student"):
                student, per_example["ce_student"] = self._student(batch, teacher_kv if cfg.shares_question_cache else None)
            if cfg.student_ce:
                terms["ce_student"] = per_example["ce_student"].mean()
            if cfg.alpha_codi > 0:
                term = codi_loss(student.distill_hidden, teacher.distill_hidden, cfg.codi_loss)
                terms["codi"], per_example["codi"] = term.value, term.per_example
            if cfg.alpha_kv > 0:
                kv_args = (teacher.kv.k, teacher.kv.v, teacher.kv.slot_mask, cfg.kv_loss, cfg.kv_layerwise_std)
                term = kv_loss(student.k, student.v, *kv_args)
                terms["kv"], per_example["kv"] = term.value, term.per_example
                terms["kv_mean_baseline"] = kv_mean_baseline(*kv_args)  # logged only: the scale of L_KV
        total = weighted_total(terms, cfg, torch.zeros((), device=self.device))
        if not return_internals:
            return KavaOutput(total, terms)
        return KavaOutput(total, terms, per_example, teacher, student)

    def teacher_targets(self, batch: dict[str, torch.Tensor], config: KavaConfig | None = None) -> TeacherTargets:
        """The stop-gradient targets of one batch as the losses see them, without running the student;
        under ``config`` (e.g. another M or eviction) instead of the model's own when given."""
        return self._teacher(batch, config or self.config)[0]

    def _teacher(self, batch: dict[str, torch.Tensor], cfg: KavaConfig) -> tuple[TeacherTargets, torch.Tensor, KV]:
        """Teacher pass: per-example CE with gradient; compressed KV and distillation states as
        stop-grad targets.

        Also returns the pass's cache, still in the graph, for the student to reuse over ``[bos] Q``.
        """
        mask = batch["t_attention_mask"]
        pos = positions_from_mask(mask)
        need_kv = cfg.alpha_kv > 0 and cfg.uses_student
        need_importance = need_kv and compression.EVICTIONS[cfg.eviction].needs_importance(cfg.eviction_lambda)
        need_hidden = cfg.alpha_codi > 0 and cfg.uses_student
        capture = nullcontext(None)
        if need_importance:
            rows, row_mask = compression.mask_columns(batch["t_answer_mask"])
            capture = capture_queries(self.lm.get_decoder(), rows, self.arch.query_module, self.arch.query_heads_first)
        with self._span("teacher"), self._dropout(cfg.teacher_dropout):
            with capture as queries:
                res = self.decode(self.embed(batch["t_input_ids"]), mask, pos, DynamicCache(), hidden_states=need_hidden)
            ce = token_ce(res.last_hidden_state, batch["t_input_ids"], batch["t_ce_mask"], self.logits)
        targets = TeacherTargets()
        with torch.no_grad():
            if need_hidden:
                targets.distill_hidden = states_at(res.hidden_states, batch["t_distill_index"]).detach()
            if need_kv:
                answer_queries = (queries, rows, row_mask) if need_importance else None
                with self._span("eviction"):
                    targets.kv = self._compress(res, batch, pos, answer_queries, cfg)
        return targets, ce, kv_of(res.cache)

    def _importance(self, queries: list[torch.Tensor], rows, row_mask, cached, mask, pos) -> torch.Tensor:
        """R-KV importance [L, B, H_kv, S] from the answer rows' queries kept during the teacher pass."""
        decoder = self.lm.get_decoder()
        attn_layer = decoder.layers[0].self_attn
        B, A = rows.shape
        q = torch.stack(queries).view(self.n_layers, B, A, -1, attn_layer.head_dim).transpose(2, 3)
        q = rotate(q, pos.gather(1, rows), self._rotaries())  # [L, B, H_q, A, d], as the attention saw them
        config = self.lm.config
        attn = compression.answer_attention(q, cached, mask, rows, attn_layer.scaling,
                                            softcap=arch.attention_softcap(config), windows=arch.sliding_windows(config))
        return compression.importance_scores(attn, row_mask, self.n_kv_heads)

    def _compress(self, res, batch, pos, answer_queries, cfg: KavaConfig) -> CompressedKV:
        """The M kept entries per layer and KV head; ``answer_queries`` = (queries, rows, row_mask)
        from `capture_queries` when the eviction scores importance."""
        cot = batch["t_cot_mask"]
        cached, values = (t.detach() for t in stack(kv_of(res.cache)))  # [L, B, H, S, d]
        unrotated = unrotate_keys(cached, pos, self._rotaries()) if "pre_rope" in (
            cfg.kv_key_space, cfg.selection_key_space) else None
        keys = unrotated if cfg.kv_key_space == "pre_rope" else cached  # the space L_KV compares in
        importance = redundancy = None
        if answer_queries is not None:
            importance = self._importance(*answer_queries, cached, batch["t_attention_mask"], pos)
        if compression.EVICTIONS[cfg.eviction].needs_redundancy(cfg.eviction_lambda):
            redundancy = compression.redundancy_scores(unrotated if cfg.selection_key_space == "pre_rope" else cached, cot)
        seeds = example_seeds(batch["t_input_ids"], batch["t_attention_mask"], cfg.seed) if cfg.eviction == "random" else None
        scores = compression.eviction_scores(
            cfg.eviction, cot, self.n_layers, self.n_kv_heads,
            importance=importance, redundancy=redundancy, lam=cfg.eviction_lambda, seeds=seeds,
        )
        if cfg.eviction_scope == "shared":
            scores = scores.mean(dim=(0, 2), keepdim=True).expand_as(scores)
        sel = compression.select_entries(scores, cot, cfg.num_latents)
        k = compression.gather_entries(keys, sel)
        return CompressedKV(
            k=k,
            k_cached=k if keys is cached else compression.gather_entries(cached, sel),
            v=compression.gather_entries(values, sel),
            slot_mask=sel.slot_mask,
            indices=sel.indices,
        )

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
        """Write config, tokenizer, adapter and extras (safetensors). Callers make it atomic."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.config.save(d / CONFIG_FILE)
        (d / BASE_FILE).write_text(json.dumps(self.base_source.to_json() if self.base_source else {}, indent=2) + "\n")
        self.tokenizer.save_pretrained(d)
        extra = {"new_rows": self.embedding.new_rows.detach().contiguous()}
        if self.projection is not None:
            extra.update({f"projection.{k}": v.contiguous() for k, v in self.projection.state_dict().items()})
        save_file(extra, str(d / EXTRA_FILE))
        if self.peft is not None:
            self.peft.save_pretrained(str(d), safe_serialization=True)
        else:
            state = {k: v.contiguous() for k, v in self.lm.state_dict().items()}
            # Tied embeddings share storage; safetensors refuses shared tensors, so drop the alias.
            if getattr(self.lm.config, "tie_word_embeddings", False):
                state.pop("lm_head.weight", None)
            save_file(state, str(d / FULL_FILE))

    def load_trained(self, directory: str | Path) -> None:
        """Load the trained parts saved by ``save_pretrained`` into this (freshly built) model.

        A checkpoint that does not fit this model (trained on another base, or with another
        projection) is one `ValueError` naming the first tensor that differs, never a torch trace.
        """
        d = Path(directory)
        extra = load_file(str(d / EXTRA_FILE), device=str(self.device))
        _check_shapes(d, {"new_rows": extra["new_rows"]}, {"new_rows": self.embedding.new_rows})
        with torch.no_grad():
            self.embedding.new_rows.copy_(extra["new_rows"])
        if self.projection is not None:
            saved = {k[len("projection."):]: v for k, v in extra.items() if k.startswith("projection.")}
            _check_shapes(d, saved, self.projection.state_dict(), "projection.")
            self.projection.load_state_dict(saved)
        if self.peft is not None:
            from peft.utils import set_peft_model_state_dict

            adapter = load_file(str(d / "adapter_model.safetensors"), device=str(self.device))
            try:
                result = set_peft_model_state_dict(self.peft, adapter)
            except RuntimeError as e:  # torch lists every size mismatch; the first names the problem
                raise ValueError(f"{d}: the adapter does not fit this base model ({_first_mismatch(e)})") from None
            if result.unexpected_keys:
                raise ValueError(f"{d}: adapter has unexpected keys {result.unexpected_keys[:3]}")
        else:
            state = load_file(str(d / FULL_FILE), device=str(self.device))
            _check_shapes(d, state, self.lm.state_dict())
            missing, unexpected = self.lm.load_state_dict(state, strict=False)
            missing = [k for k in missing if k != "lm_head.weight"]
            if missing or unexpected:
                raise ValueError(f"{d}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str | torch.device = "cpu", dtype=torch.float32,
                        base_model=None) -> "KavaModel":
        """Rebuild a saved model: base model from its recorded source (or the one given), then trained parts."""
        from transformers import AutoTokenizer

        d = find_model_dir(directory)
        config = KavaConfig.load(d / CONFIG_FILE)
        source = ModelSource.read(d)
        if base_model is None:
            if source is None:
                raise ValueError(f"{d}: no base model recorded ({BASE_FILE}); pass base_model=")
            if config.lora_enabled and source.kind == "config" and source.seed is None:
                raise ValueError(f"{d}: a LoRA checkpoint on a randomly initialised base with no recorded seed "
                                 "cannot be rebuilt (its base weights were never saved); pass base_model=")
            base_model = source.load_model(dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(d))
        try:
            model = cls(base_model.to(device), tokenizer, config, base_source=source)
        except ValueError as e:  # e.g. a tokenizer larger than the base's embedding: another base or tokenizer
            raise ValueError(f"{d}: {e}") from None
        model.load_trained(d)
        return model.to(device)
