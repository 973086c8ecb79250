"""Errors that migsim raises on purpose: each says where and why, never a bare traceback."""

from __future__ import annotations


class ScenarioError(ValueError):
    """A scenario file (or override) is wrong: names the file, the line and the dotted key.

    ``str(err)`` is the one line the CLI prints: ``file:line: key.path: problem (got X)``.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.problem = message
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        prefix = f"{key}: " if key else ""
        super().__init__(f"{where}{prefix}{message}")


class ResultsError(ValueError):
    """A results folder cannot be read back: a table is not Parquet, is damaged, or is not a
    migsim table (its columns are missing). ``str(err)`` names the file."""


class PluginError(RuntimeError):
    """A plug-in's code misbehaved (raised, called ``sys.exit``, returned the wrong type).
    ``str(err)`` is one line naming the plug-in and what it did."""


class XbzrleDecodeError(ValueError):
    """An XBZRLE record breaks one of QEMU's decoder rules (REF §2.3); the reason says which."""


class MigrationError(RuntimeError):
    """A migration failed inside the model (for example, a record the destination cannot decode)."""


class QmpError(Exception):
    """A QMP command refused, as QEMU refuses it: an error class and QEMU's text (REF §7.1).

    Endpoint methods raise it; the QMP server turns it into
    ``{"error": {"class": error_class, "desc": desc}}``.
    """

    def __init__(self, desc: str, error_class: str = "GenericError") -> None:
        self.desc = desc
        self.error_class = error_class
        super().__init__(desc)
