"""Stage configs: pydantic models whose fields are also the CLI flags.

Every stage config subclasses :class:`StageConfig`. Field descriptions become ``--help`` text;
``json_schema_extra`` may carry CLI hints:

- ``{"argument": True}`` makes the field positional (a list field takes several values; errors
  name it by its metavar, ``INPUT``),
- ``{"flag": "--from"}`` gives the field another flag name than ``--field-name``,
- ``{"short": "-o"}`` adds a short flag name,
- ``{"cli": False}`` keeps the field out of the flags (config file only).

Dataset locations are typed :data:`PathOrURL`: a local path becomes a ``Path``, a URL
(``s3://bucket/x``, ``memory://x``) stays a string (``Path`` would collapse it to ``s3:/bucket/x``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePath
from typing import Annotated, Any, ClassVar, TypeVar, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)

from albertzh.errors import ConfigError

C = TypeVar("C", bound="StageConfig")

# scheme:// with a scheme of two or more characters (so a Windows drive C:// is not a URL).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+://")


def is_url(value: Any) -> bool:
    """True for a ``scheme://...`` string (a location for pyarrow/fsspec filesystems)."""
    return isinstance(value, str) and _URL.match(value) is not None


def _path_or_url(value: Any) -> Path | str:
    if isinstance(value, PurePath):
        return Path(value)
    if isinstance(value, str):
        return value if is_url(value) else Path(value)
    raise ValueError("expected a local path or a URL")


# A local path (-> Path) or a URL (kept as the string given). The CLI maps it to a text flag.
PathOrURL = Annotated[Union[Path, str], PlainValidator(_path_or_url, json_schema_input_type=str)]  # noqa: UP007

# The --break-lock switch of every stage that writes an output directory (albertzh.outputs).
BreakLock = Annotated[
    bool,
    Field(
        description="Break the lock an albertzh process left in the output directory when that "
        "process is gone (killed or crashed); a running writer's lock is never broken."
    ),
]


class StageConfig(BaseModel):
    """Base of every stage config: strict (unknown keys are errors) and validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    # Added to the error for a --config file with unknown fields (e.g. a file meant for a flag).
    config_file_hint: ClassVar[str] = ""


def flag_name(field: str) -> str:
    """The CLI flag for a config field: ``min_freq`` -> ``--min-freq``."""
    return "--" + field.replace("_", "-")


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict; keys may use dashes or underscores."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a YAML or JSON text file (byte {exc.start} is not UTF-8)"
        ) from exc
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # parse errors from json/yaml
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: cannot parse config: {first}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config must be a mapping of field: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def cli_name(cls: type[BaseModel] | None, field: str) -> str:
    """How the CLI names ``field``: its flag (a ``{"flag": ...}`` hint wins over the name), or
    for a positional its metavar (``INPUT``)."""
    info = cls.model_fields.get(field) if cls is not None else None
    extra = info.json_schema_extra if info is not None else None
    if isinstance(extra, dict) and extra.get("argument"):
        return field.upper()
    if isinstance(extra, dict) and extra.get("flag"):
        return str(extra["flag"])
    return flag_name(field)


def validation_message(
    exc: ValidationError, source: str | None = None, cls: type[BaseModel] | None = None
) -> str:
    """One line naming the offending flag(s) of a pydantic ValidationError."""
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if str(x)]
        msg = err.get("msg", "invalid value")
        msg = "missing" if err.get("type") == "missing" else msg.removeprefix("Value error, ")
        if loc:
            where = cli_name(cls, loc[0]) + "".join(f"[{x}]" for x in loc[1:])
            parts.append(f"{where}: {msg}")
        else:
            parts.append(msg)
    text = "; ".join(parts)
    return f"{source}: {text}" if source else text


def build_config(
    cls: type[C], file: Path | None = None, overrides: dict[str, Any] | None = None
) -> C:
    """Resolve a stage config: file values first, then explicit flag overrides on top."""
    data: dict[str, Any] = {}
    if file is not None:
        data.update(load_config_file(file))
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            names = ", ".join(unknown[:8])
            if len(unknown) > 8:
                names += f" (+{len(unknown) - 8} more)"
            hint = f"; {cls.config_file_hint}" if cls.config_file_hint else ""
            raise ConfigError(f"{file}: unknown field(s) {names} for {cls.__name__}{hint}")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            validation_message(exc, str(file) if file and not overrides else None, cls)
        ) from exc


class CorpusStageConfig(StageConfig):
    """Options every corpus stage (clean, segment, build-vocab, make-shards) shares."""

    output: PathOrURL = Field(
        ...,
        description="Output directory (Parquet parts + manifest.json): a local path or a URL (s3://, gs://, hdfs://, file://, or any fsspec URL).",
        json_schema_extra={"short": "-o"},
    )
    workers: int = Field(
        1, ge=1, description="Worker processes; outputs are identical for any number."
    )
    resume: bool = Field(
        False, description="Keep complete parts in the output directory and do only the rest."
    )
    overwrite: bool = Field(
        False,
        description="Delete what albertzh wrote in the output directory first (a directory "
        "holding other files is refused).",
    )
    break_lock: BreakLock = False
    shard_index: int = Field(
        0, ge=0, description="Process only work units i with i % num_shards == shard_index."
    )
    num_shards: int = Field(
        1, ge=1, description="Split the work over this many machines (see --shard-index)."
    )

    @model_validator(mode="after")
    def _check_shards(self) -> CorpusStageConfig:
        if self.shard_index >= self.num_shards:
            raise ValueError(
                f"--shard-index {self.shard_index} must be smaller than --num-shards {self.num_shards}"
            )
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other")
        return self
