"""Storage: one repository interface (qaloop.storage.base.Repository), SQLite and PostgreSQL."""

from qaloop.storage.base import DeadLetter, Repository
from qaloop.storage.factory import open_repository

__all__ = ["DeadLetter", "Repository", "open_repository"]
