"""``albertzh convert``: albert_zh TF checkpoints in; albertzh, HF and TF1 directories out."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from albertzh.config import StageConfig
from albertzh.console import Summary
from albertzh.errors import ConfigError, ModelDirError
from albertzh.model.config import AlbertConfig
from albertzh.model.convert import (
    Layout,
    build_model,
    check_output,
    config_from_tf_json,
    detect_heads,
    detect_layout,
    is_skipped,
    layout_of,
    ln_of,
    load_model_dir,
    load_vocab,
    replace_dir,
    save_tf,
    tf_to_state,
)


class ConvertConfig(StageConfig):
    """Options of ``albertzh convert`` (``source_format``/``target_format`` are ``--from``/``--to``)."""

    config_file_hint: ClassVar[str] = "albert_zh's albert_config*.json goes to --albert-config"

    source: Path = Field(
        ...,
        description="TF checkpoint prefix (or its directory), or an HF/albertzh model directory.",
        json_schema_extra={"argument": True},
    )
    source_format: Literal["tf", "hf"] = Field(
        "tf",
        description="What SOURCE is: a TF1 albert_zh checkpoint or an HF/albertzh model dir.",
        json_schema_extra={"flag": "--from"},
    )
    target_format: Literal["albertzh", "hf", "tf"] = Field(
        "albertzh",
        description="What to write: an albertzh model dir, an HF dir (google layout only), or a "
        "TF1 checkpoint in albert_zh's variable names.",
        json_schema_extra={"flag": "--to"},
    )
    output: Path = Field(..., description="Output directory.", json_schema_extra={"short": "-o"})
    albert_config: Path | None = Field(
        None,
        description="albert_zh's albert_config*.json (for --from tf; default: the only "
        "albert_config*.json beside the checkpoint).",
    )
    vocab: Path | None = Field(
        None,
        description="vocab.txt / spiece.model or a directory holding it (default: beside the "
        "checkpoint, or the source model dir).",
    )
    layout: Literal["auto", "google", "brightmart"] = Field(
        "auto", description="TF variable layout; auto-detected from the variable names."
    )
    ln_type: Literal["auto", "postln", "preln"] = Field(
        "auto",
        description="brightmart layout: post- or pre-LayerNorm layers (auto: the config's "
        "ln_type, else postln).",
    )
    verify: bool = Field(
        True,
        description="Reload what was written and compare its outputs with the converted model "
        "(and with transformers for --to hf, when installed).",
    )
    overwrite: bool = Field(False, description="Replace a non-empty output directory.")


# Files whose names match *config*.json beside a checkpoint but describe no model (the
# tokenizer files albertzh's own --to tf writes there, and HF's).
_NOT_MODEL_CONFIGS = {"tokenizer_config.json", "special_tokens_map.json", "generation_config.json"}


def _beside(prefix: Path, pattern: str, what: str, flag: str) -> Path:
    found = sorted(p for p in prefix.parent.glob(pattern) if p.name not in _NOT_MODEL_CONFIGS)
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(f"{prefix.parent}: no {what} beside the checkpoint (pass {flag})")
    names = ", ".join(p.name for p in found)
    raise ConfigError(f"{prefix.parent}: several {what} files ({names}); pass {flag}")


def _refuse_model_dir(source: Path) -> None:
    """``--from tf`` (the default) given an HF/albertzh model directory: say to use ``--from hf``."""
    weights = ("model.safetensors", "pytorch_model.bin")
    if (source / "config.json").is_file() and any((source / w).is_file() for w in weights):
        raise ConfigError(
            f"{source}: an HF/albertzh model directory (config.json + weights), not a TF "
            "checkpoint; use --from hf"
        )


def _refuse_checkpoint(source: Path) -> None:
    """``--from hf`` given a TF checkpoint (prefix, .index file or release dir): say ``--from tf``."""
    ckpt_file = source.is_file() and (source.suffix == ".index" or ".data-" in source.name)
    prefix = source.with_name(source.name + ".index").is_file()
    tf_dir = (
        source.is_dir() and not (source / "config.json").exists() and any(source.glob("*.index"))
    )
    if ckpt_file or prefix or tf_dir:
        raise ConfigError(f"{source}: a TF checkpoint, not a model directory; use --from tf")


def _probe(model: Any, config: AlbertConfig) -> tuple[Any, Any, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    T = min(16, config.max_position_embeddings)
    ids = torch.randint(0, config.vocab_size, (2, T), generator=g)
    mask = torch.ones(2, T, dtype=torch.long)
    mask[1, T // 2 :] = 0
    types = torch.zeros(2, T, dtype=torch.long)
    types[:, T // 4 :] = min(1, config.type_vocab_size - 1)
    return ids, mask, types


def _outputs(model: Any, ids: Any, mask: Any, types: Any) -> dict[str, Any]:
    import torch

    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    return {k: v for k, v in vars(out).items() if isinstance(v, torch.Tensor)}


def _hf_outputs(path: Path, arch: str, ids: Any, mask: Any, types: Any) -> dict[str, Any]:
    import torch
    import transformers

    cls = getattr(transformers, arch)
    model = cls.from_pretrained(str(path))
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    names = {
        "prediction_logits": "mlm_logits",
        "sop_logits": "sop_logits",
        "logits": "logits",
        "last_hidden_state": "last_hidden_state",
        "pooler_output": "pooler_output",
    }
    return {names[k]: v for k, v in out.items() if k in names and isinstance(v, torch.Tensor)}


def _max_diff(a: dict[str, Any], b: dict[str, Any], where: Path) -> float:
    if set(a) != set(b):
        raise ModelDirError(f"{where}: reloaded model gives outputs {sorted(b)}, not {sorted(a)}")
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _verify(model: Any, config: AlbertConfig, target: Path, fmt: str, arch: str) -> dict[str, Any]:
    """Reload what was written and compare outputs on a fixed probe batch."""
    from albertzh.model.tf_checkpoint import TFCheckpoint

    probe = _probe(model, config)
    want = _outputs(model, *probe)
    if fmt == "tf":
        back = TFCheckpoint(target / "model.ckpt")
        again = tf_to_state(
            {n: back[n] for n in back}, config, layout=layout_of(config), source=str(target)
        )
        reloaded = build_model(config, again.state, again.heads)
    else:
        reloaded = type(model).from_pretrained(target)
        reloaded.eval()
    figures: dict[str, Any] = {
        "verify_max_abs_diff": _max_diff(want, _outputs(reloaded, *probe), target)
    }
    if fmt == "hf":
        try:
            import transformers  # noqa: F401
        except ImportError:
            figures["transformers_max_abs_diff"] = "transformers not installed"
        else:
            got = _hf_outputs(target, arch, *probe)
            figures["transformers_max_abs_diff"] = _max_diff(want, got, target)
    return figures


def run(cfg: ConvertConfig) -> Summary:
    """Convert SOURCE into an albertzh/HF model dir or an albert_zh TF checkpoint."""
    from albertzh.model.io import META_FILE
    from albertzh.model.tf_checkpoint import TFCheckpoint, resolve_prefix

    out = Path(cfg.output)
    check_output(out, cfg.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"source": str(cfg.source), "from": cfg.source_format}

    if cfg.source_format == "tf":
        _refuse_model_dir(Path(cfg.source))
        prefix = resolve_prefix(Path(cfg.source))
        ckpt = TFCheckpoint(prefix)
        names = set(ckpt)
        layout: Layout = (
            detect_layout(names, str(prefix)) if cfg.layout == "auto" else cfg.layout  # type: ignore[assignment]
        )
        config_path = cfg.albert_config or _beside(
            prefix, "*config*.json", "albert_config*.json", "--albert-config"
        )
        heads = detect_heads(names)
        num_labels = None
        if "classifier" in heads and "output_weights" in names:
            num_labels = int(ckpt.entries["output_weights"].shape[0])
        config, groups = config_from_tf_json(
            config_path,
            ln_type=None if cfg.ln_type == "auto" else cfg.ln_type,
            layout=layout,
            num_labels=num_labels,
        )
        wanted = {n for n in names if not is_skipped(n)}
        tensors = {n: ckpt[n] for n in sorted(wanted)}
        conv = tf_to_state(tensors, config, layout=layout, groups=groups, source=str(prefix))
        model = build_model(config, conv.state, conv.heads)
        vocab = cfg.vocab or _beside(prefix, "vocab*.txt", "vocab.txt", "--vocab")
        tokenizer = load_vocab(vocab, config)
        figures.update(
            {
                "layout": layout,
                "ln_type": ln_of(config),
                "tensors": len(conv.state),
                "skipped_optimizer_slots": sum(1 for n in names if is_skipped(n)),
            }
        )
    else:
        src = Path(cfg.source)
        _refuse_checkpoint(src)
        if not src.is_dir():
            raise ModelDirError(f"{src}: model directory not found")
        model = load_model_dir(src)
        config = model.config
        tokenizer = load_vocab(cfg.vocab or src, config)
        figures.update({"layout": layout_of(config), "ln_type": ln_of(config)})
        fresh = getattr(model, "load_info", {}).get("initialized")
        if fresh:
            figures["initialized"] = fresh

    arch = type(model).hf_architecture
    figures.update({"architecture": arch, "parameters": sum(p.numel() for p in model.parameters())})
    if cfg.target_format == "hf" and layout_of(config) != "google":
        raise ConfigError(
            f"--to hf: {cfg.source}: the brightmart layout has no transformers equivalent; "
            "use --to albertzh (or --to tf)"
        )

    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        target = work / "out"
        if cfg.target_format == "tf":
            save_tf(model, tokenizer, target)
        else:
            meta = {
                "stage": "convert",
                "config": cfg.model_dump(mode="json"),
                "source_format": cfg.source_format,
                "layout": figures["layout"],
            }
            model.save_pretrained(target, tokenizer=tokenizer, meta=meta)
            if cfg.target_format == "hf":
                for extra in (META_FILE, "vocab.json"):
                    (target / extra).unlink(missing_ok=True)
        if cfg.verify:
            figures.update(_verify(model, config, target, cfg.target_format, arch))
        replace_dir(target, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["to"] = cfg.target_format
    figures["output"] = str(out)
    return Summary("convert", figures)
