"""``ops/notifications.yml``: which webhooks are told about what, and how hard to try.

Validated like every ops/ file (:mod:`continuity.config`): a mistake names file, line and key path, and exits 2
from ``continuity notify check`` and ``continuity worker``; a file broken under a running fleet leaves the last good
one in force. A missing file means no webhooks: notifications are opt-in.

A webhook's URL often carries its credential (Slack's do), so it may be given as ``url_env``, the name of an
environment variable of the workers, and stay out of the repository.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from continuity.blueprint import ID_RE
from continuity.config import Duration, Strict, load_document, validate
from continuity.errors import ContinuityError
from continuity.notify.conditions import Limits
from continuity.notify.topics import TOPICS

Format = Literal["json", "slack", "alertmanager"]


class Retry(Strict):
    """Exponential backoff between attempts: ``initial``, doubled each time up to ``max``, for ``give_up_after``."""

    initial: Duration = Field(default=5.0, gt=0)
    max: Duration = Field(default=300.0, gt=0)
    give_up_after: Duration = Field(default=86400.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Retry:
        if self.max < self.initial:
            raise ValueError("max must not be shorter than initial")
        return self


class Webhook(Strict):
    url: str | None = None
    url_env: str | None = None
    format: Format = "json"
    topics: list[str] = Field(default_factory=lambda: list(TOPICS))
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = Field(default=5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {v!r}")
        return v

    @field_validator("topics")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in TOPICS]
        if unknown:
            raise ValueError(f"unknown topic {unknown[0]!r}: use {', '.join(TOPICS)}")
        return v

    @model_validator(mode="after")
    def _one_url(self) -> Webhook:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url or url_env")
        if not self.topics:
            raise ValueError("topics is empty: the webhook would never be told anything")
        return self


class Checks(Strict):
    """How often and by what thresholds the watched conditions (:mod:`continuity.notify.conditions`) are judged;
    the defaults are the alert rules' (ops/alerts/continuity.rules.yml)."""

    every: Duration = Field(default=30.0, gt=0)
    snapshot_schedules: float = Field(default=3.0, gt=0)
    verify_schedules: float = Field(default=3.0, gt=0)
    pause_without_expiry: Duration = Field(default=86400.0, gt=0)

    def limits(self) -> Limits:
        return Limits(self.snapshot_schedules, self.verify_schedules, self.pause_without_expiry)


class NotificationsModel(Strict):
    version: Literal[1] = 1
    fleet: str | None = None  # the name shown in messages; default: the blueprint's fleet
    retry: Retry = Field(default_factory=Retry)
    checks: Checks = Field(default_factory=Checks)
    webhooks: dict[str, Webhook] = Field(default_factory=dict)


@dataclass(frozen=True)
class Notifications:
    """A validated file: webhooks by name, the retry policy, where it came from."""

    model: NotificationsModel
    source: str

    @property
    def webhooks(self) -> dict[str, Webhook]:
        return self.model.webhooks

    @property
    def retry(self) -> Retry:
        return self.model.retry

    @property
    def checks(self) -> Checks:
        return self.model.checks

    def subscribers(self, topic: str) -> list[str]:
        return sorted(name for name, w in self.webhooks.items() if topic in w.topics)


NONE = Notifications(NotificationsModel(), "<none>")


def url_of(name: str, hook: Webhook) -> str:
    """The webhook's URL, resolved now (``url_env`` in this process's environment)."""
    if hook.url is not None:
        return hook.url
    value = os.environ.get(hook.url_env or "")
    if not value:
        raise ContinuityError(f"webhook {name}: environment variable {hook.url_env} is not set")
    if not value.startswith(("http://", "https://")):
        raise ContinuityError(f"webhook {name}: {hook.url_env} is not an http(s) URL")
    return value


def load_notifications(path: str | Path) -> Notifications:
    """The file validated; a missing file is no webhooks (:data:`NONE`)."""
    if not Path(path).exists():
        return NONE
    doc = load_document(path)
    model = validate(doc, NotificationsModel)
    for name in model.webhooks:
        if not ID_RE.match(name):
            raise doc.error(("webhooks", name), f"invalid webhook name {name!r}: use lower-case letters, digits, "
                                                "'-' or '_'")
    return Notifications(model, str(path))

