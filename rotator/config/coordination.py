"""``server.coordination``: the settings of partitioned replicas (docs/deployment.md).

Its own module because the URL is a value of its own kind: a tooz backend URL
written as it is, or a secret reference when it carries a password (a Redis
URL's ``:password@``), which the file must not hold.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    model_validator,
)

from rotator.config.fields import PositiveDuration, has_userinfo, shown
from rotator.secrets import SecretRef, parse_ref

__all__ = ["COORDINATION_SCHEMES", "CoordinationSettings", "CoordinationUrl"]

#: tooz backends that keep a group's membership for replicas on several hosts (``file`` and
#: ``ipc`` reach one host only); rotator ships the Redis client, the others need theirs
COORDINATION_SCHEMES = frozenset(
    {"redis", "etcd3+http", "etcd3+https", "zookeeper", "kazoo", "memcached"}
    | {"mysql", "postgresql", "kubernetes"}
)
_BACKEND_URL = re.compile(r"([a-z][a-z0-9+.-]*)://[^\s]*")


def _coordination_url(value: object) -> str | SecretRef:
    """A tooz backend URL as it is, or a reference to one that holds a password."""
    if isinstance(value, SecretRef):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a tooz backend URL such as redis://127.0.0.1:6379")
    if value.partition(":")[0] in ("env", "file", "cred"):
        return parse_ref(value)
    match = _BACKEND_URL.fullmatch(value) if len(value) <= 2048 else None
    if match is None or has_userinfo(value) or "password=" in value.lower():
        raise ValueError(
            "must be a tooz backend URL such as redis://127.0.0.1:6379; a URL with a "
            "password goes in a reference (url: env:NAME or file:/path holding it)"
        )
    if match.group(1) not in COORDINATION_SCHEMES:
        raise ValueError(
            f"{shown(match.group(1))} is not a coordination backend; "
            f"use one of {', '.join(sorted(COORDINATION_SCHEMES))}"
        )
    return value


CoordinationUrl = Annotated[
    str | SecretRef, PlainValidator(_coordination_url), PlainSerializer(str)
]


class CoordinationSettings(BaseModel):
    """``server.coordination``: replicas divide the accounts through tooz (docs/deployment.md:
    "Partitioned replicas")."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    url: CoordinationUrl
    #: the tooz group the replicas of one configuration join
    group: str = Field(default="rotator", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    #: a replica silent this long is out; its accounts go to the others
    membership_timeout: PositiveDuration = timedelta(seconds=30)
    #: how often a replica looks at the membership (joins, leaves, deaths)
    watch_interval: PositiveDuration = timedelta(seconds=2)

    @model_validator(mode="after")
    def _check_timing(self) -> CoordinationSettings:
        if self.watch_interval >= self.membership_timeout:
            raise ValueError("watch_interval must be shorter than membership_timeout")
        if self.membership_timeout < timedelta(seconds=2):
            raise ValueError("membership_timeout must be at least 2s (heartbeats run at half)")
        return self
