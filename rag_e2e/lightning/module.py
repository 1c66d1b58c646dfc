"""The LightningModule: RAG loss (plus optional reader-only loss), retrieval and QA metrics, optimisers."""

from __future__ import annotations

import lightning as L
import torch

from rag_e2e.errors import ConfigError, TrainingDivergedError
from rag_e2e.eval.metrics import answer_metrics, gold_rank, retrieval_metrics
from rag_e2e.lightning.datamodule import QABatch
from rag_e2e.losses import OBJECTIVES, ObjectiveSettings, Terms
from rag_e2e.models.generator import frozen_weight_names
from rag_e2e.models.rag import RagModel, RagOutput, Retrieved
from rag_e2e.retrieval.distributed import all_gather_objects


def check_reader_checkpoint(checkpoint: dict, expected: set[str], reader_base: str | None) -> None:
    """A checkpoint must hold every weight but the frozen reader's, and name the reader it was trained on."""
    missing = sorted(expected - set(checkpoint["state_dict"]))
    if missing:
        raise ConfigError(f"checkpoint lacks {len(missing)} weights this config trains (first: {missing[0]}); "
                          "was it written by a run with another `generator` or `retriever` config?")
    saved = checkpoint.get("reader_base")
    if saved is not None and saved != reader_base:
        raise ConfigError(f"checkpoint was trained on reader '{saved}' but `generator.name_or_path` is "
                          f"'{reader_base}'")


class RagLitModule(L.LightningModule):
    """Jointly trains the query encoder and the generator through a retrieval objective.

    Args:
        rag: the model (encoders, generator, index).
        objective: the training objective's name in `rag_e2e.losses.OBJECTIVES` (`model.loss`); its reader and
            retriever terms are summed and logged apart.
        objective_settings: its hyperparameters (temperatures, label smoothing, Gumbel samples).
        lr: generator learning rate.
        retriever_lr: query-encoder learning rate.
        freeze_query_encoder: keep the retriever fixed (the control run).
        train_passage_encoder: train the passage tower too (end to end; `rag.fresh_passages` must be on so doc
            scores depend on it).
        passage_lr: passage-encoder learning rate (None: retriever_lr).
        passage_ready_recall: the passage tower's learning rate stays 0 until the running train recall@k (EMA over
            steps) reaches this, so the query tower first learns to retrieve gold passages at all (None: no wait).
            Before that the marginal likelihood gives the passage tower little signal but drift, and every update
            moves the index away from the space the query tower is learning.
        reader_loss_weight: weight of the supervised (gold passage, question) -> answer loss on reader-only data.
        reader_warmup_steps: at most this many steps train the reader alone before the RAG loss is switched on.
        reader_ready_nll: end the warm-up early once the reader's running NLL falls below this (it can read):
            training the retriever against a reader that cannot read yet makes recall collapse.
        eval_ks: recall@k cut-offs; max(eval_ks) passages are retrieved at evaluation, the top k are read.
        reader_base: the reader's pretrained weights (`generator.name_or_path`), named in every checkpoint; frozen
            reader weights are left out of checkpoints and loaded from there again.
        answered: per evaluation ("val", "test"; "init" uses "test"'s), the question ids the reader answers (None:
            all). Retrieval is scored on every question, EM/F1 on these only.
    """

    def __init__(self, rag: RagModel, *, lr: float = 1e-3, retriever_lr: float = 1e-4, weight_decay: float = 0.0,
                 warmup_steps: int = 0, objective: str = "sequence",
                 objective_settings: ObjectiveSettings | None = None, freeze_query_encoder: bool = False,
                 train_passage_encoder: bool = False, passage_lr: float | None = None,
                 passage_ready_recall: float | None = None,
                 reader_loss_weight: float = 0.0, reader_warmup_steps: int = 0, reader_ready_nll: float | None = None,
                 eval_ks: tuple[int, ...] = (1, 5, 10), num_beams: int = 1, max_new_tokens: int = 16,
                 reader_base: str | None = None, answered: dict[str, frozenset[str] | None] | None = None):
        super().__init__()
        self.rag = rag
        self.lr, self.retriever_lr, self.weight_decay, self.warmup_steps = lr, retriever_lr, weight_decay, warmup_steps
        self.objective = OBJECTIVES[objective]
        self.objective_settings = objective_settings or ObjectiveSettings()
        self.freeze_query_encoder = freeze_query_encoder
        if train_passage_encoder and not rag.fresh_passages:
            raise ValueError("train_passage_encoder needs rag.fresh_passages: stored index vectors carry no gradient")
        self.train_passage_encoder = train_passage_encoder
        self.passage_lr = retriever_lr if passage_lr is None else passage_lr
        self.passage_ready_recall = passage_ready_recall
        self.passage_start_step: int | None = None  # first step the passage tower learns (saved in checkpoints)
        self._recall_ema: float | None = None
        self.reader_loss_weight, self.reader_warmup_steps = reader_loss_weight, reader_warmup_steps
        self.reader_ready_nll = reader_ready_nll
        self.rag_start_step: int | None = None  # first step with the RAG loss (saved in checkpoints)
        self._reader_nll_ema: float | None = None
        self.eval_ks, self.num_beams, self.max_new_tokens = tuple(eval_ks), num_beams, max_new_tokens
        self.answered = answered or {}
        # Query-side only: the passage tower stays as it was when the index was built (shared towers train as one).
        rag.encoder.freeze(query=freeze_query_encoder, passage=not (train_passage_encoder or rag.encoder.shared))
        self.reader_base = reader_base
        self.strict_loading = False  # frozen reader weights are not in checkpoints; on_load_checkpoint checks the rest
        self.test_prefix = "test"  # "init" for the evaluation before training
        self._records: list[dict] = []
        self.predictions: list[dict] = []  # filled by each test run

    # ---- training -------------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        rag_batch: QABatch = batch["rag"] if isinstance(batch, dict) else batch
        reader_batch: QABatch | None = batch.get("reader") if isinstance(batch, dict) else None
        loss = torch.zeros((), device=self.device)
        size = len(rag_batch.examples)
        if self._rag_active():
            terms, out = self.objective_terms(rag_batch)
            loss = loss + terms.total.mean()
            self.log("train/reader_loss", terms.reader.mean(), batch_size=size, prog_bar=True)
            self.log("train/retriever_loss", terms.retriever.mean(), batch_size=size)
            ranks = self._ranks(rag_batch, out.retrieved.rows)
            recall = sum(r is not None for r in ranks) / size
            self.log("train/recall@k", recall, batch_size=size)
            self._recall_ema = recall if self._recall_ema is None else 0.9 * self._recall_ema + 0.1 * recall
            if self.passage_ready_recall is not None and self.passage_start_step is None:
                if self._all_ranks(self._recall_ema >= self.passage_ready_recall):
                    self.passage_start_step = self.global_step
        if reader_batch is not None and self.reader_loss_weight > 0:
            ctx = [ex.context or ("", "") for ex in reader_batch.examples]
            answers = [ex.answers[0] for ex in reader_batch.examples]
            reader_nll = self.rag.reader_nll([c[0] for c in ctx], [c[1] for c in ctx], reader_batch.questions, answers)
            loss = loss + self.reader_loss_weight * reader_nll.mean()
            self.log("train/reader_nll", reader_nll.mean(), batch_size=len(answers))
            value = reader_nll.mean().item()
            self._reader_nll_ema = value if self._reader_nll_ema is None else 0.9 * self._reader_nll_ema + 0.1 * value
        # Stop before the optimizer step spreads NaN into the weights; every rank stops (one rank alone would hang).
        if not self._all_ranks(bool(torch.isfinite(loss.detach()))):
            qids = [ex.qid for ex in rag_batch.examples]
            raise TrainingDivergedError(f"step {self.global_step}: the training loss is {loss.item()} on the batch of "
                                        f"questions {qids[:8]}{' ...' if len(qids) > 8 else ''}; the last good "
                                        "checkpoint is kept (checkpoints/last.ckpt): lower `model.lr` or "
                                        "`model.retriever_lr`, or set `trainer.gradient_clip_val`")
        self.log("train/loss", loss, batch_size=size)
        return loss

    def objective_terms(self, batch: QABatch) -> tuple[Terms, RagOutput]:
        """The objective's reader and retriever terms (B,) on one batch, and the forward pass they came from."""
        out = self.rag(batch.q_ids, batch.q_mask, batch.questions, batch.labels,
                       full_distributions=self.objective_settings.label_smoothing > 0, examples=batch.examples)
        return self.objective.fn(out.scores, self.objective_settings), out

    def _rag_active(self) -> bool:
        """Whether the reader warm-up is over (a fixed number of steps, or earlier once the reader can read)."""
        if self.rag_start_step is None:
            ready = self.reader_ready_nll is not None and self._reader_nll_ema is not None and \
                self._reader_nll_ema < self.reader_ready_nll
            if self._all_ranks(ready or self.global_step >= self.reader_warmup_steps):
                self.rag_start_step = self.global_step
        return self.rag_start_step is not None

    def passage_tower_learns(self, step: int) -> bool:
        """Whether the passage tower's learning rate is on at optimizer step `step`."""
        if self.passage_ready_recall is None:
            return True
        return self.passage_start_step is not None and step > self.passage_start_step

    def _all_ranks(self, flag: bool) -> bool:
        """`flag` on every rank (DDP ranks must switch a phase at the same step, or their weights part ways)."""
        return self._trainer.strategy.reduce_boolean_decision(flag, all=True) if self._trainer else flag

    def swap_index(self, index) -> None:
        """Make a (re)built index live for the next retrieval; called between steps by IndexRefreshCallback."""
        self.rag.set_index(index)

    def frozen_reader_keys(self) -> set[str]:
        """State-dict keys of reader weights that never train (a frozen reader, or the base under LoRA): they come
        from `generator.name_or_path` again, so checkpoints leave them out."""
        return {f"rag.generator.{name}" for name in frozen_weight_names(self.rag.generator)}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rag_start_step"] = self.rag_start_step
        checkpoint["passage_start_step"] = self.passage_start_step
        # The running averages that end the warm-up phases: without them a resumed run switches at another step.
        checkpoint["reader_nll_ema"], checkpoint["recall_ema"] = self._reader_nll_ema, self._recall_ema
        frozen = self.frozen_reader_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}
        checkpoint["reader_base"] = self.reader_base

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.rag_start_step = checkpoint.get("rag_start_step")
        self.passage_start_step = checkpoint.get("passage_start_step")
        self._reader_nll_ema, self._recall_ema = checkpoint.get("reader_nll_ema"), checkpoint.get("recall_ema")
        check_reader_checkpoint(checkpoint, set(self.state_dict()) - self.frozen_reader_keys(), self.reader_base)

    # ---- evaluation (validation and test share one step) ---------------------------------------------------------
    def _ranks(self, batch: QABatch, rows: torch.Tensor) -> list[int | None]:
        corpus = self.rag.corpus
        ranks = []
        for ex, row in zip(batch.examples, rows.tolist()):
            passages = [corpus[r] for r in row]
            ranks.append(gold_rank([p.pid for p in passages], list(ex.gold_pids), [p.text for p in passages],
                                   list(ex.answers)))
        return ranks

    def _eval_step(self, batch: QABatch, answered: frozenset[str] | None) -> None:
        k_read = self.rag.k
        k_max = min(max(k_read, *self.eval_ks), self.rag.index.size)
        ret = self.rag.retrieve(batch.q_ids, batch.q_mask, k_max, fresh=False)  # what the index retrieves
        ranks = self._ranks(batch, ret.rows)
        top = self.rag.to_read(ret, batch.examples, k_read)
        todo = [i for i, ex in enumerate(batch.examples) if answered is None or ex.qid in answered]
        answers: list[str | None] = [None] * len(batch.examples)  # None: not answered (retrieval scored only)
        if todo:
            some = Retrieved(rows=top.rows[todo], doc_scores=top.doc_scores[todo])
            generated = self.rag.generate([batch.questions[i] for i in todo], some, self.num_beams,
                                          self.max_new_tokens)
            for i, answer in zip(todo, generated):
                answers[i] = answer
        for ex, rank, answer, row, score in zip(batch.examples, ranks, answers, top.rows.tolist(),
                                                top.doc_scores.tolist()):
            self._records.append({"qid": ex.qid, "question": ex.question, "answer": answer,
                                  "gold": list(ex.answers), "gold_pids": list(ex.gold_pids), "gold_rank": rank,
                                  "retrieved": [self.rag.corpus[r].pid for r in row],
                                  "scores": [round(s, 4) for s in score]})

    def _log_eval(self, prefix: str) -> list[dict]:
        # Under DDP each rank evaluated a slice (padded by repeating questions): gather all, count each once.
        gathered, self._records = all_gather_objects(self._records), []
        recs = list({r["qid"]: r for r in gathered}.values())
        metrics = retrieval_metrics([r["gold_rank"] for r in recs], ks=self.eval_ks)
        said = [r for r in recs if r["answer"] is not None]
        if said:  # EM/F1 over the answered questions only; `answered` says how many they are
            metrics.update(answer_metrics([r["answer"] for r in said], [r["gold"] for r in said]))
        metrics["answered"] = len(said)
        for name, value in metrics.items():
            self.log(f"{prefix}/{name}", float(value), batch_size=max(len(recs), 1))
        return recs

    def validation_step(self, batch: QABatch, batch_idx: int) -> None:
        self._eval_step(batch, self.answered.get("val"))

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def test_step(self, batch: QABatch, batch_idx: int) -> None:
        self._eval_step(batch, self.answered.get("test"))

    def on_test_epoch_end(self) -> None:
        self.predictions = self._log_eval(self.test_prefix)

    # ---- optimisation --------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        groups = [{"params": [p for p in self.rag.generator.parameters() if p.requires_grad], "lr": self.lr}]
        groups = [g for g in groups if g["params"]]  # a frozen reader has none
        query_params = [p for p in self.rag.encoder.query_model.parameters() if p.requires_grad]
        if query_params and not self.freeze_query_encoder:
            groups.append({"params": query_params, "lr": self.retriever_lr})
        warmup = max(self.warmup_steps, 1)

        def linear_warmup(step: int) -> float:
            return min(1.0, (step + 1) / warmup)

        factors = [linear_warmup] * len(groups)
        if self.train_passage_encoder and not self.rag.encoder.shared:
            groups.append({"params": list(self.rag.encoder.passage_model.parameters()), "lr": self.passage_lr})
            factors.append(lambda step: linear_warmup(step) * self.passage_tower_learns(step))
        optimizer = torch.optim.AdamW(groups, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
