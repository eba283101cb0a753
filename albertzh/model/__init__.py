"""The PyTorch ALBERT core: config with size presets, models, and HF-compatible model dirs.

```python
from albertzh.model import AlbertConfig, AlbertForPretraining

config = AlbertConfig.preset("tiny", vocab_size=21128)
model = AlbertForPretraining(config)
out = model(input_ids=ids, attention_mask=mask, masked_positions=positions)
out.mlm_logits  # [B, P, V]; out.sop_logits  # [B, 2]
model.save_pretrained("run/model")
```
"""

from albertzh.model.albert import (
    AlbertClassifierOutput,
    AlbertForPretraining,
    AlbertForSequenceClassification,
    AlbertModel,
    AlbertModelOutput,
    AlbertPretrainingOutput,
)
from albertzh.model.config import PRESETS, AlbertConfig
from albertzh.model.io import read_meta

__all__ = [
    "PRESETS",
    "AlbertClassifierOutput",
    "AlbertConfig",
    "AlbertForPretraining",
    "AlbertForSequenceClassification",
    "AlbertModel",
    "AlbertModelOutput",
    "AlbertPretrainingOutput",
    "read_meta",
]
