"""Structured run configuration: the dataclasses are the schema, YAML groups in `configs/` fill them in.

Every field is typed; OmegaConf rejects unknown keys and wrong types, and `__post_init__` checks values, naming the
override key to change. Config stops at the entry point: library code receives these dataclasses or plain values.

    checks.py     the value checks (`_check`, `_one_of`) and MAX_K
    data.py       data.*: DataConfig, SyntheticConfig, the data root
    models.py     encoder.*, generator.*: EncoderConfig, GeneratorConfig, LoraConfig
    retrieval.py  retriever.*, index.*, refresh.*: RetrieverConfig, IndexConfig, RefreshConfig
    training.py   model.*, eval.*, trainer.*, logger.*: ModelConfig, EvalConfig, TrainerConfig, LoggerConfig
    run.py        RunConfig: every group, and the checks across groups
    prepare.py    PrepareConfig: rag-e2e prepare's options
"""

from rag_e2e.config.checks import MAX_K
from rag_e2e.config.data import DATA_ROOT_DEFAULT, DATA_ROOT_ENV, DataConfig, SyntheticConfig
from rag_e2e.config.models import EncoderConfig, GeneratorConfig, LoraConfig
from rag_e2e.config.prepare import PrepareConfig
from rag_e2e.config.retrieval import IndexConfig, RefreshConfig, RetrieverConfig
from rag_e2e.config.run import RunConfig
from rag_e2e.config.training import EvalConfig, LoggerConfig, ModelConfig, TrainerConfig

__all__ = [
    "DATA_ROOT_DEFAULT", "DATA_ROOT_ENV", "MAX_K", "DataConfig", "EncoderConfig", "EvalConfig", "GeneratorConfig",
    "IndexConfig", "LoggerConfig", "LoraConfig", "ModelConfig", "PrepareConfig", "RefreshConfig", "RetrieverConfig",
    "RunConfig", "SyntheticConfig", "TrainerConfig",
]
