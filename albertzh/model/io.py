"""Model directories: load HF/albertzh checkpoints into albertzh models and save them back.

A model directory holds ``config.json`` (HF AlbertConfig), ``model.safetensors`` (HF key names;
the tied MLM decoder is not stored, as transformers does), ``albertzh.json`` (what produced it)
and tokenizer files. ``from_pretrained`` also reads HF's ``pytorch_model.bin`` and sharded
safetensors, and checkpoints saved from a bare ``AlbertModel`` (keys without ``albert.``).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, TypeVar

import torch

from albertzh.errors import AlbertzhError, ModelDirError
from albertzh.model.config import AlbertConfig

log = logging.getLogger(__name__)

M = TypeVar("M", bound=torch.nn.Module)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "albertzh.json"

# Keys older HF checkpoints carry that are not parameters here: the tied decoder (its weight is
# the word-embedding table, its bias is ``predictions.bias``) and the position-id buffers.
_TIED_OR_BUFFERS = (
    "predictions.decoder.weight",
    "predictions.decoder.bias",
    "albert.embeddings.position_ids",
    "albert.embeddings.token_type_ids",
)


def _short_list(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The raw tensors of a model directory (safetensors, sharded safetensors, or .bin)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    single = path / WEIGHTS_FILE
    index = path / "model.safetensors.index.json"
    legacy = path / "pytorch_model.bin"
    try:
        if single.is_file():
            return load_file(single)
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                state.update(load_file(path / shard))
            return state
        if legacy.is_file():
            state = torch.load(legacy, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise ModelDirError(f"{legacy}: expected a state dict, got {type(state).__name__}")
            return state
    except (
        SafetensorError,
        OSError,
        KeyError,
        ValueError,
        RuntimeError,
        pickle.UnpicklingError,
    ) as exc:
        if isinstance(exc, AlbertzhError):
            raise
        bad = single if single.is_file() else index if index.is_file() else legacy
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelDirError(f"{bad}: cannot read weights: {first}") from exc
    raise ModelDirError(f"{path}: no weights found (expected {WEIGHTS_FILE} or pytorch_model.bin)")


def _normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Put every key in the ``albert.``-prefixed namespace and drop tied copies and buffers."""
    if not any(k.startswith("albert.") for k in state):
        # Saved from a bare AlbertModel: backbone keys have no prefix.
        backbone = ("embeddings.", "encoder.", "pooler.")
        state = {("albert." + k if k.startswith(backbone) else k): v for k, v in state.items()}
    if "predictions.bias" not in state and "predictions.decoder.bias" in state:
        state["predictions.bias"] = state["predictions.decoder.bias"]
    return {k: v for k, v in state.items() if k not in _TIED_OR_BUFFERS}


def load_model(cls: type[M], path: str | os.PathLike[str], **overrides: Any) -> M:
    """Build ``cls`` from the directory's config (plus overrides) and load its weights.

    Backbone keys must match exactly. Heads of ``cls`` (and the pooler) that the checkpoint lacks
    entirely are freshly initialised; heads of other classes in the checkpoint are ignored (``model.load_info`` says
    which). A head present only in part, or with the wrong shape, is an error -- except
    the classifier when the overrides change the labels (count or names): it starts fresh.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(f"{path}: model directory not found")
    if not (path / CONFIG_FILE).is_file():
        raise ModelDirError(f"{path}: no {CONFIG_FILE} (not a model directory)")
    stored = AlbertConfig.from_json(path / CONFIG_FILE)
    config = stored.replace(**overrides) if overrides else stored
    state = _normalise_keys(read_state_dict(path))

    model = cls(config, init=False)  # type: ignore[call-arg]
    bare = not hasattr(model, "albert")  # AlbertModel itself: its keys lack the prefix
    own = {("albert." + k if bare else k): v for k, v in model.state_dict().items()}
    # The pooler counts as a head too: HF's AlbertForMaskedLM (the albert_chinese_* models)
    # and token-level heads are saved without one. A model without a pooler (a token-level
    # head) ignores the checkpoint's.
    has_pooler = any(k.startswith("albert.pooler.") for k in own)
    heads: tuple[str, ...] = (
        *getattr(type(model), "heads", ()),
        *(("albert.pooler",) if has_pooler else ()),
    )

    def head_of(key: str) -> str | None:
        if key.startswith("albert.pooler."):
            return "albert.pooler"
        return None if key.startswith("albert.") else key.split(".", 1)[0]

    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    fresh = sorted({head_of(k) for k in missing if head_of(k) in heads} - {None})
    # A head counts as fresh only when the checkpoint has none of it.
    partial = [h for h in fresh if any(head_of(k) == h for k in state)]
    # A classifier is only meaningful for the labels it was trained on.
    reinit_classifier = "classifier" in heads and config.labels() != stored.labels()
    if reinit_classifier and "classifier" not in fresh:
        fresh.append("classifier")
        state = {k: v for k, v in state.items() if head_of(k) != "classifier"}
        partial = [h for h in partial if h != "classifier"]
    missing = [k for k in missing if head_of(k) not in fresh]
    ignored = sorted({head_of(k) for k in unexpected if head_of(k) is not None} - set(heads))
    unexpected = [k for k in unexpected if head_of(k) not in ignored]

    problems = []
    if partial:
        problems.append(f"head(s) only partly stored: {', '.join(partial)}")
    if missing:
        problems.append(f"missing keys: {_short_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_short_list(unexpected)}")
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(own)
        if k in state and state[k].shape != own[k].shape
    ]
    if shapes:
        problems.append(f"shape mismatch (checkpoint vs config): {_short_list(shapes, 4)}")
    if problems:
        raise ModelDirError(
            f"{path}: weights do not match {type(model).__name__}: " + "; ".join(problems)
        )

    load = {(k.removeprefix("albert.") if bare else k): v for k, v in state.items() if k in own}
    model.load_state_dict(load, strict=False)
    for head in fresh:
        module = model.get_submodule(head.removeprefix("albert.") if bare else head)
        model.init_weights(module)  # type: ignore[operator]
    if fresh or ignored:
        log.info("%s: initialised new head(s) %s; ignored %s", path, fresh, ignored)
    model.load_info = {"initialized": fresh, "ignored": ignored}  # type: ignore[assignment]
    return model


def require_trained_heads(model: torch.nn.Module, path: str | os.PathLike[str]) -> None:
    """Refuse a model whose weights lacked a head that :func:`load_model` then initialised
    afresh: a finetuned model that lost its classifier must not answer at random."""
    fresh = (getattr(model, "load_info", None) or {}).get("initialized") or []
    if fresh:
        raise ModelDirError(
            f"{path}: its weights hold no {', '.join(fresh)} although config.json describes "
            f"a {type(model).__name__}; the directory is incomplete or its files were mixed "
            "up (refusing to use randomly initialised weights)"
        )


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``albertzh.json`` of a model directory ({} for plain HF directories)."""
    file = Path(path) / META_FILE
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{file}: not valid JSON: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _usual_modes(root: Path) -> None:
    """mkdtemp makes the directory 0700 and safetensors its file 0600: give them the modes a
    plain mkdir/open would (0777/0666 less the umask), so other users can load the model."""
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
    for p in root.rglob("*"):
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def save_model(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    tokenizer: Any = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a model directory; never leaves a half-written file behind.

    A new directory is built under a temporary name and renamed into place. An existing one
    (e.g. a run directory that also holds checkpoints/) gets each file replaced atomically.
    """
    from safetensors.torch import save_file

    from albertzh import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config: AlbertConfig = model.config  # type: ignore[assignment]
    arch = type(model).hf_architecture  # type: ignore[attr-defined]
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        config.to_json(tmp / CONFIG_FILE, architectures=[arch])
        state = model.state_dict()
        # Keys exactly as HF saves the same class (a bare AlbertModel has no ``albert.`` prefix).
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        save_file(tensors, tmp / WEIGHTS_FILE, metadata={"format": "pt"})
        info = {
            "albertzh_version": __version__,
            "architecture": arch,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            **(meta or {}),
        }
        (tmp / META_FILE).write_text(
            json.dumps(info, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
        )
        if tokenizer is not None:
            tokenizer.save(tmp)
        _usual_modes(tmp)
        if not path.exists():
            os.replace(tmp, path)
            return path
        if not path.is_dir():
            raise ModelDirError(f"{path}: exists and is not a directory")
        # config.json goes last: a reader never sees a new config with old weights.
        names = sorted(p.name for p in tmp.iterdir() if p.name != CONFIG_FILE)
        for name in [*names, CONFIG_FILE]:
            target = path / name
            if target.is_dir() and not (tmp / name).is_dir():
                raise ModelDirError(f"{target}: is a directory, cannot write model file")
            if (tmp / name).is_dir() and target.exists():
                shutil.rmtree(target)
            os.replace(tmp / name, target)
        return path
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
