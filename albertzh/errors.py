"""User-caused errors. The CLI prints one red line for these and exits with code 2."""

from __future__ import annotations


class AlbertzhError(Exception):
    """Base class for errors a user can cause (bad path, bad config, bad data)."""


class InputError(AlbertzhError):
    """An input file or directory is missing, unreadable, or malformed."""


class ConfigError(AlbertzhError):
    """A configuration value is invalid; the message names the flag or field."""


class DatasetError(AlbertzhError):
    """A stage directory is incomplete, of the wrong stage, or has the wrong schema."""


class VocabMismatchError(AlbertzhError):
    """Data was produced with another vocabulary than the one in use."""


class ModelDirError(AlbertzhError):
    """A model directory is missing files or its weights do not match the config."""
