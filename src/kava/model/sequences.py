"""Records → padded teacher and student token batches (docs/method.md §2).

Every text segment (question, CoT, answer prompt, answer) is tokenized on its own and the ids
are concatenated, so ``P A [eos]`` is the very same id sequence in teacher and student: the
first answer digit is predicted from the same prompt tokens in both modes, whatever the
tokenizer does with leading spaces.

Padding layout, chosen so per-example indices stay simple and exact; position ids always come
from the attention mask (``positions_from_mask``), so they equal those of the example alone:
- student prefix ``[bos] Q <bot>`` is left-padded, so the M latent slots and the answer segment
  occupy the same columns for every example;
- teacher ``[bos] Q C' P A [eos]`` is ``[bos] Q`` left-padded exactly as in the student prefix,
  then ``C' P A [eos]`` right-padded. Its first columns are therefore the student prefix without
  ``<bot>`` (same ids, mask and positions), so the student can reuse the teacher's cache over
  them instead of running the question again (``KavaConfig.student_shares_question_cache``);
- student answer segment ``<eot> P A [eos]`` is right-padded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kava.config import ConfigError, KavaConfig
from kava.curricula import Curriculum, StudentStage
from kava.data.records import Record

BOT, EOT, LATENT = "<bot>", "<eot>", "<latent>"
SPECIAL_TOKENS = (BOT, EOT, LATENT)


def positions_from_mask(mask: torch.Tensor, offset: torch.Tensor | int = 0) -> torch.Tensor:
    """Position ids that count only real tokens, so left or right padding never shifts them."""
    pos = mask.long().cumsum(-1) - 1
    pos = pos.clamp(min=0)
    if isinstance(offset, torch.Tensor):
        offset = offset.view(-1, 1)
    return pos + offset


class SequenceBuilder:
    """Tokenizes records into the teacher, student and inference sequences of one method config."""

    def __init__(self, tokenizer, config: KavaConfig):
        self.tok = tokenizer
        self.config = config
        missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            raise ConfigError(f"tokenizer lacks the special tokens {missing}; wrap the model with KavaModel first")
        self.bot_id, self.eot_id, self.latent_id = (tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS)
        if tokenizer.eos_token_id is None:
            raise ConfigError("tokenizer has no eos token")
        self.eos_id: int = tokenizer.eos_token_id
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.bos_ids = self._leading_special_ids()
        self.prompt_ids = self.encode(" " + config.answer_prompt.strip())
        self._check_prompt()

    # ---- tokenization ------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def _leading_special_ids(self) -> list[int]:
        """The ids the tokenizer itself puts before a text (e.g. Llama's bos); none for SmolLM2."""
        with_sp = list(self.tok("a", add_special_tokens=True)["input_ids"])
        without = self.encode("a")
        n = len(with_sp) - len(without)
        return with_sp[:n] if n > 0 and with_sp[n:] == without else []

    def _check_prompt(self) -> None:
        unk = self.tok.unk_token_id
        decoded = self.tok.decode(self.prompt_ids).strip()
        if not self.prompt_ids or (unk is not None and unk in self.prompt_ids) or decoded != self.config.answer_prompt.strip():
            raise ConfigError(
                f"option 'answer_prompt': the tokenizer cannot represent {self.config.answer_prompt!r} "
                f"(decodes back as {decoded!r})"
            )

    def question_ids(self, question: str) -> list[int]:
        if self.config.use_chat_template:
            text = self.tok.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
            )
            return self.encode(text)
        return self.bos_ids + self.encode(question.strip())

    def cot_ids(self, steps: Sequence[str], *, drop_last: bool) -> list[int]:
        steps = list(steps[:-1]) if drop_last else list(steps)
        return self.encode(" " + " ".join(s.strip() for s in steps)) if steps else []

    def answer_ids(self, answer: str) -> list[int]:
        return self.encode(" " + answer.strip()) + [self.eos_id]

    def blank_lead(self, answer_ids: Sequence[int]) -> int:
        """How many leading answer tokens are only whitespace (a lone space before digits).

        Tokenizers that split numbers from the space before them (Llama 3, SmolLM2, the demo's)
        start `` 185`` with a space token. The CODI distillation state must sit where the first
        *answer* token is predicted (docs/method.md §5); the state that predicts the space carries none
        of the answer, so the index moves past these tokens.
        """
        n = 0
        while n < len(answer_ids) - 1 and not self.tok.decode(answer_ids[: n + 1]).strip():
            n += 1
        return n

    # ---- training batches --------------------------------------------------------------
    def training_batch(self, records: Sequence[Record], step: int | None = None) -> dict[str, torch.Tensor]:
        """Tensors for one training step; keys ``t_*`` feed the teacher pass, ``s_*`` the student.

        ``step`` (optimizer steps done) is needed by a curriculum (`kava.curricula`): it sets the
        stage, which shapes the teacher's trace (iCoT removes its first tokens) or the student's
        sequence (Coconut writes the trace steps left after its ``s_num_latents`` thoughts)."""
        if not records:
            raise ValueError("empty batch")
        cfg = self.config
        schedule = cfg.curriculum_schedule()
        if schedule is not None and step is None:
            raise ValueError(f"a {cfg.curriculum} batch depends on the training step: pass step=")
        need_steps = (cfg.teacher_uses_cot and cfg.uses_teacher) or schedule is not None
        for i, r in enumerate(records):
            r.validate(need_steps=need_steps, where=f"batch record {i}")
        batch: dict[str, torch.Tensor] = {}
        if cfg.uses_teacher:
            batch.update(self._teacher(records, schedule, step))
        if cfg.uses_student:
            batch.update(self._student(records, None if schedule is None else schedule.student_stage(step)))
        return batch

    def _teacher(self, records: Sequence[Record], curriculum: Curriculum | None = None,
                 step: int | None = None) -> dict[str, torch.Tensor]:
        """``[bos] Q C' P A [eos]``; under a ``curriculum`` C' is its trace at ``step`` (iCoT's loses
        its first tokens)."""
        cfg = self.config
        q_ids = [self.question_ids(r.question) for r in records]
        question = self._left_pad(q_ids, "q")
        rest = []
        for r, q in zip(records, q_ids):
            c = self.cot_ids(r.steps, drop_last=cfg.teacher_drop_last_step) if cfg.teacher_uses_cot else []
            if curriculum is not None:
                c = curriculum.teacher_trace(step, c, bytes(str(q + c), "utf-8"))
            rest.append((c, self.prompt_ids, self.answer_ids(r.answer)))
        B, Lq = question["q_ids"].shape
        S = Lq + max(sum(len(p) for p in row) for row in rest)
        ids = torch.full((B, S), self.pad_id, dtype=torch.long)
        ids[:, :Lq] = question["q_ids"]
        mask, ce, cot, ans = (torch.zeros(B, S, dtype=torch.bool) for _ in range(4))
        mask[:, :Lq] = question["q_mask"].bool()
        distill = torch.zeros(B, dtype=torch.long)
        for b, (c, p, a) in enumerate(rest):
            n_c, n_p = len(c), len(p)
            end = Lq + n_c + n_p + len(a)
            ids[b, Lq:end] = torch.tensor(c + p + a)
            mask[b, Lq:end] = True
            ce[b, Lq:end] = True  # C' P A eos are predicted
            cot[b, Lq : Lq + n_c] = True
            ans[b, Lq + n_c : end] = True  # P A eos: the importance query rows
            distill[b] = Lq + n_c + n_p - 1 + self.blank_lead(a)  # predicts the first answer token
        return {
            "t_input_ids": ids,
            "t_attention_mask": mask.long(),
            "t_ce_mask": ce,
            "t_cot_mask": cot,
            "t_answer_mask": ans,
            "t_distill_index": distill,
        }

    def student_prefix(self, questions: Sequence[str]) -> dict[str, torch.Tensor]:
        """Left-padded ``[bos] Q <bot>``: shared by training and latent inference.

        Without ``<bot>`` it is the teacher's left-padded question block, column for column.
        """
        seqs = [self.question_ids(q) + [self.bot_id] for q in questions]
        return self._left_pad(seqs, "s_prefix")

    def _left_pad(self, seqs: list[list[int]], name: str) -> dict[str, torch.Tensor]:
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(seqs), L, dtype=torch.long)
        for b, s in enumerate(seqs):
            ids[b, L - len(s) :] = torch.tensor(s)
            mask[b, L - len(s) :] = 1
        return {f"{name}_ids": ids, f"{name}_mask": mask}

    def _student(self, records: Sequence[Record], stage: StudentStage | None = None) -> dict[str, torch.Tensor]:
        """``<eot> P A [eos]`` after the latents; at a curriculum's ``stage`` (Coconut's)
        ``<eot> C_rest P A [eos]``, the trace steps its thoughts have not replaced written out
        before the answer, after ``stage.thoughts`` latents."""
        out = self.student_prefix([r.question for r in records])
        answers = [self.answer_ids(r.answer) for r in records]
        rests = [[] if stage is None else self.cot_ids(stage.remaining(r.steps), drop_last=False) for r in records]
        segs = [[self.eot_id] + rest + self.prompt_ids + a for rest, a in zip(rests, answers)]
        La = max(len(s) for s in segs)
        B = len(segs)
        ids = torch.full((B, La), self.pad_id, dtype=torch.long)
        mask = torch.zeros(B, La, dtype=torch.long)
        ce = torch.zeros(B, La, dtype=torch.bool)
        for b, s in enumerate(segs):
            ids[b, : len(s)] = torch.tensor(s)
            mask[b, : len(s)] = 1
            ce[b, 1 : len(s)] = True  # P A eos are predicted; <eot> is given
        out.update(
            {
                "s_answer_ids": ids,
                "s_answer_mask": mask,
                "s_ce_mask": ce,
                # <eot> sits at 0, so the last token of P is at len(C_rest) + len(P); then any blank lead.
                "s_distill_index": torch.tensor([len(rest) + len(self.prompt_ids) + self.blank_lead(a)
                                                 for rest, a in zip(rests, answers)]),
            }
        )
        if stage is not None:
            out["s_num_latents"] = torch.tensor(stage.thoughts)
        return out

    # ---- inference prompts -------------------------------------------------------------
    def direct_prompt(self, questions: Sequence[str], *, with_answer_prompt: bool) -> dict[str, torch.Tensor]:
        """Left-padded ``[bos] Q`` (CoT decoding) or ``[bos] Q P`` (No-CoT decoding)."""
        tail = self.prompt_ids if with_answer_prompt else []
        return self._left_pad([self.question_ids(q) + tail for q in questions], "prompt")
