"""Corpus and dataset plumbing shared by the stages (no torch): filesystems, Parquet datasets,
input sources, cleaning rules, masking, the task registry and the demo data."""
