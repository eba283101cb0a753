"""Torch training and inference shared by the stages: the training loop and checkpoints
(:mod:`.loop`), pretraining batches and metrics (:mod:`.instances`, :mod:`.pretraining`) and
batched inference with finetuned heads (:mod:`.inference`)."""
