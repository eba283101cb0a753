"""The PyTorch ALBERT core: config with size presets, models, and HF-compatible model dirs.

```python
from albertzh.model import AlbertConfig, AlbertForPreTraining

config = AlbertConfig.preset("tiny", vocab_size=21128)
model = AlbertForPreTraining(config)
out = model(input_ids=ids, attention_mask=mask, masked_positions=positions)
out.mlm_logits  # [B, P, V]; out.sop_logits  # [B, 2]
model.save_pretrained("run/model")
```
"""

from albertzh.model.albert import (
    AlbertClassifierOutput,
    AlbertForMultipleChoice,
    AlbertForPreTraining,
    AlbertForQuestionAnswering,
    AlbertForSequenceClassification,
    AlbertForTokenClassification,
    AlbertModel,
    AlbertModelOutput,
    AlbertMultipleChoiceOutput,
    AlbertPretrainingOutput,
    AlbertQuestionAnsweringOutput,
    AlbertTokenClassifierOutput,
)
from albertzh.model.config import PRESETS, AlbertConfig
from albertzh.model.io import read_meta

# Finetuned heads by the architecture their config.json names (export, eval and predict load
# a model dir through this).
HEAD_MODELS: dict[str, type] = {
    cls.hf_architecture: cls
    for cls in (AlbertForSequenceClassification, AlbertForTokenClassification)
}
HEAD_MODELS[AlbertForMultipleChoice.hf_architecture] = AlbertForMultipleChoice
HEAD_MODELS[AlbertForQuestionAnswering.hf_architecture] = AlbertForQuestionAnswering

__all__ = [
    "HEAD_MODELS",
    "PRESETS",
    "AlbertClassifierOutput",
    "AlbertConfig",
    "AlbertForMultipleChoice",
    "AlbertForPreTraining",
    "AlbertForQuestionAnswering",
    "AlbertForSequenceClassification",
    "AlbertForTokenClassification",
    "AlbertModel",
    "AlbertModelOutput",
    "AlbertMultipleChoiceOutput",
    "AlbertPretrainingOutput",
    "AlbertQuestionAnsweringOutput",
    "AlbertTokenClassifierOutput",
    "read_meta",
]


def __getattr__(name: str) -> object:
    # The spelling before 0.2 (transformers spells it PreTraining); kept for one release.
    if name == "AlbertForPretraining":
        import warnings

        warnings.warn(
            "AlbertForPretraining is deprecated; use AlbertForPreTraining",
            DeprecationWarning,
            stacklevel=2,
        )
        return AlbertForPreTraining
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
