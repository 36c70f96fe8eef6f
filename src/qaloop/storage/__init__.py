"""Storage: one repository interface (qaloop.storage.base.Repository), SQLite and PostgreSQL."""

from qaloop.storage.base import DeadLetter, Repository, open_repository

__all__ = ["DeadLetter", "Repository", "open_repository"]
