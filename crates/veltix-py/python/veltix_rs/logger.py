"""``Logger``, ``LoggerConfig``, ``LogLevel``: 3.3.0's logging API over the stdlib ``veltix_rs``
logger (``logging.getLogger("veltix_rs")``). Without configuration, nothing below WARNING is
printed (Python's last-resort handler prints warnings and errors, with tracebacks, to stderr)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, ClassVar, TextIO

__all__ = ["Logger", "LoggerConfig", "LogLevel"]


class LogLevel(IntEnum):
    """Log levels (3.3.0 values); ``str()`` gives the name."""

    TRACE = 5
    DEBUG = 10
    INFO = 20
    SUCCESS = 25
    WARNING = 30
    ERROR = 40
    CRITICAL = 50

    def __str__(self) -> str:
        return self.name


for _lvl in LogLevel:
    logging.addLevelName(int(_lvl), _lvl.name)


@dataclass
class LoggerConfig:
    """Logger settings (3.3.0 fields and defaults)."""

    level: LogLevel = LogLevel.INFO
    enabled: bool = True
    use_colors: bool = True
    show_timestamp: bool = True
    show_level: bool = True
    show_caller: bool = True
    file_path: "str | Path | None" = None
    file_rotation_size: int = 10 * 1024 * 1024
    file_backup_count: int = 5
    stream: TextIO = field(default_factory=lambda: sys.stdout)

    def __post_init__(self) -> None:
        if not isinstance(self.level, LogLevel):
            raise TypeError(f"LoggerConfig.level must be a LogLevel, got {type(self.level).__name__}")
        if self.file_path is not None:
            if str(self.file_path) == "":
                raise ValueError("LoggerConfig.file_path must not be empty")
            self.file_path = Path(self.file_path)
        if self.file_rotation_size <= 0 or self.file_backup_count <= 0:
            raise ValueError("file_rotation_size and file_backup_count must be > 0")
        if not hasattr(self.stream, "write"):
            raise TypeError("LoggerConfig.stream must have write()")


class Logger:
    """The process-wide logger singleton; ``Logger(config)`` reconfigures it."""

    _instance: ClassVar["Logger | None"] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __new__(cls, config: LoggerConfig | None = None) -> "Logger":
        with cls._lock:
            if cls._instance is None:
                inst = super().__new__(cls)
                inst._log = logging.getLogger("veltix_rs")
                inst._stats = {lvl: 0 for lvl in LogLevel}
                inst._handlers = []
                cls._instance = inst
                inst.configure(config or LoggerConfig())
            elif config is not None:
                cls._instance.configure(config)
            return cls._instance

    def __init__(self, config: LoggerConfig | None = None) -> None:
        pass

    @classmethod
    def get_instance(cls, config: LoggerConfig | None = None) -> "Logger":
        """The singleton (reconfigured if ``config`` is given)."""
        return cls(config)

    @classmethod
    def reset_instance(cls) -> None:
        """Forget the singleton (its handlers are removed)."""
        with cls._lock:
            inst = cls._instance
            cls._instance = None
        if inst is not None:
            for h in inst._handlers:
                inst._log.removeHandler(h)

    def configure(self, config: LoggerConfig) -> None:
        """Apply ``config``: level, stream handler, optional rotating file."""
        self.config = config
        for h in self._handlers:
            self._log.removeHandler(h)
        self._handlers = []
        fmt = ""
        if config.show_timestamp:
            fmt += "[%(asctime)s] "
        if config.show_level:
            fmt += "%(levelname)-5s "
        if config.show_caller:
            fmt += "%(filename)s:%(lineno)d "
        fmt += "%(message)s"
        formatter = logging.Formatter(fmt, datefmt="%H:%M:%S")
        sh = logging.StreamHandler(config.stream)
        sh.setFormatter(formatter)
        self._handlers.append(sh)
        if config.file_path is not None:
            try:
                fh = logging.handlers.RotatingFileHandler(
                    config.file_path, maxBytes=config.file_rotation_size,
                    backupCount=config.file_backup_count, encoding="utf-8")
            except OSError as e:
                raise ValueError(f"cannot open log file {config.file_path}: {e}") from e
            fh.setFormatter(formatter)
            self._handlers.append(fh)
        for h in self._handlers:
            self._log.addHandler(h)
        self._log.propagate = False
        self._log.setLevel(int(config.level))
        self._log.disabled = not config.enabled
        self._stats = {lvl: 0 for lvl in LogLevel}

    def _emit(self, level: LogLevel, message: str, args: tuple[Any, ...]) -> None:
        self._stats[level] += 1
        self._log.log(int(level), message, *args, stacklevel=3)

    def trace(self, message: str, *args: Any) -> None:
        """Log at TRACE."""
        self._emit(LogLevel.TRACE, message, args)

    def debug(self, message: str, *args: Any) -> None:
        """Log at DEBUG."""
        self._emit(LogLevel.DEBUG, message, args)

    def info(self, message: str, *args: Any) -> None:
        """Log at INFO."""
        self._emit(LogLevel.INFO, message, args)

    def success(self, message: str, *args: Any) -> None:
        """Log at SUCCESS."""
        self._emit(LogLevel.SUCCESS, message, args)

    def warning(self, message: str, *args: Any) -> None:
        """Log at WARNING."""
        self._emit(LogLevel.WARNING, message, args)

    def error(self, message: str, *args: Any) -> None:
        """Log at ERROR."""
        self._emit(LogLevel.ERROR, message, args)

    def critical(self, message: str, *args: Any) -> None:
        """Log at CRITICAL."""
        self._emit(LogLevel.CRITICAL, message, args)

    def set_level(self, level: LogLevel) -> None:
        """Change the level."""
        self._log.setLevel(int(level))

    def enable(self) -> None:
        """Turn logging on."""
        self._log.disabled = False

    def disable(self) -> None:
        """Turn logging off."""
        self._log.disabled = True

    def get_stats(self) -> dict[LogLevel, int]:
        """Messages logged through this object per level since the last ``configure``."""
        return dict(self._stats)
