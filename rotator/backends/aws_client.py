"""The Secrets Manager calls rotator makes, as a typed Protocol; the boto3 client
behind it, with botocore's ``standard`` retries; and the one error mapping.

:class:`SecretsManager` lists exactly the operations the store uses, with
keyword arguments as boto3 names them, so mypy checks every call the store
makes (boto3's own client is typed by stubs generated per service, which this
project does not install); :func:`build_client` is the one place that says the
boto3 client is one.

Throttling, 5xx answers and refused connections are retried by botocore's
``standard`` retry mode (its retry conditions, retry quota and jittered
exponential backoff). Only the wait itself is ours: botocore would
``time.sleep``, which neither the daemon's stop event nor
``rotator.waits.set_testing`` can reach, so the retry handler is wrapped to
wait on the store's :class:`~rotator.waits.Waiter` instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from rotator.errors import (
    StoreAuthError,
    StoreError,
    StorePermissionError,
    StoreUnavailable,
    scrub,
)
from rotator.waits import Waiter

if TYPE_CHECKING:
    from rotator.config.models import AwsStoreSettings

__all__ = [
    "ATTEMPTS",
    "Exists",
    "NotFound",
    "SecretsManager",
    "StageNotMoved",
    "build_client",
    "mapped",
]

_log = logging.getLogger("rotator.backends.aws")

#: attempts per call (the first one included) before a throttled or failing call
#: is reported as unavailable
ATTEMPTS = 6

_THROTTLED = {
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
}
_SERVER_SIDE = {"InternalServiceError", "InternalFailure", "ServiceUnavailable"}
_AUTH = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "ExpiredToken",
    "IncompleteSignature",
    "MissingAuthenticationToken",
}
_DENIED = {"AccessDeniedException", "AccessDenied"}

Answer = Mapping[str, Any]
TagList = Sequence[Mapping[str, str]]


class SecretsManager(Protocol):
    """Exactly the Secrets Manager operations the store calls (boto3's names)."""

    def get_secret_value(self, *, SecretId: str, VersionStage: str) -> Answer: ...

    def describe_secret(self, *, SecretId: str) -> Answer: ...

    def create_secret(
        self,
        *,
        Name: str,
        ClientRequestToken: str,
        SecretString: str,
        Tags: TagList,
        KmsKeyId: str = ...,
    ) -> Answer: ...

    def put_secret_value(
        self,
        *,
        SecretId: str,
        ClientRequestToken: str,
        SecretString: str,
        VersionStages: Sequence[str] = ...,
    ) -> Answer: ...

    def update_secret_version_stage(
        self,
        *,
        SecretId: str,
        VersionStage: str,
        MoveToVersionId: str = ...,
        RemoveFromVersionId: str = ...,
    ) -> Answer: ...

    def tag_resource(self, *, SecretId: str, Tags: TagList) -> Answer: ...

    def delete_secret(self, *, SecretId: str, ForceDeleteWithoutRecovery: bool) -> Answer: ...

    def close(self) -> None: ...


class NotFound(StoreError):
    """ResourceNotFoundException: an expected answer, handled by the callers."""


class Exists(StoreError):
    """ResourceExistsException on CreateSecret."""


class StageNotMoved(StoreError):
    """InvalidParameterException on UpdateSecretVersionStage, e.g. RemoveFromVersionId
    is no longer AWSCURRENT."""


def build_client(settings: AwsStoreSettings, store: str, waiter: Waiter) -> SecretsManager:
    """The boto3 Secrets Manager client for ``settings``, its retry waits on ``waiter``."""
    import boto3
    import botocore.config
    import botocore.exceptions

    _quiet_wire_logs()
    timeout = settings.timeout.total_seconds()
    config = botocore.config.Config(
        retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
        connect_timeout=timeout,
        read_timeout=timeout,
        # one connection per concurrent worker, instead of botocore's 10
        max_pool_connections=64,
    )
    try:
        session = boto3.session.Session(profile_name=settings.profile, region_name=settings.region)
        client = session.client("secretsmanager", endpoint_url=settings.endpoint_url, config=config)
    except botocore.exceptions.ProfileNotFound:
        raise StoreAuthError(
            f"AWS profile {settings.profile!r} is not in the shared config files "
            "(~/.aws/config, ~/.aws/credentials)",
            store=store,
        ) from None
    except botocore.exceptions.NoRegionError:
        raise StoreError(
            "no AWS region: set region on the store, or AWS_REGION in the environment",
            store=store,
        ) from None
    _wait_on(client, waiter, store)
    # boto3 builds the client's methods at run time from the service model; the
    # Protocol above is what this module promises they are
    return cast(SecretsManager, client)


def _wait_on(client: Any, waiter: Waiter, store: str) -> None:
    """Put botocore's standard retry handler behind one that waits on ``waiter``.

    ``Config(retries={"mode": "standard"})`` registers the handler under a
    unique id and keeps no reference to it; it is registered again here (the
    same botocore function, so the same conditions, quota and backoff) to get
    one, and the event gets the waiting wrapper instead."""
    from botocore.retries import standard

    service = client.meta.service_model.service_id.hyphenize()
    event, unique_id = f"needs-retry.{service}", f"retry-config-{service}"
    client.meta.events.unregister(event, unique_id=unique_id)
    handler = standard.register_retry_handler(client, max_attempts=ATTEMPTS)
    client.meta.events.unregister(event, unique_id=unique_id)
    client.meta.events.register(
        event, _WaitedRetries(handler, waiter, store).needs_retry, unique_id=f"rotator-{unique_id}"
    )


class _WaitedRetries:
    """botocore's retry decision and delay; the wait on a Waiter (stop, testing)."""

    def __init__(self, handler: Any, waiter: Waiter, store: str) -> None:
        self._handler = handler
        self._waiter = waiter
        self._store = store

    def needs_retry(self, **kwargs: Any) -> float | bool | None:
        import botocore.exceptions

        caught = kwargs.get("caught_exception")
        # A server that does not answer within `timeout` is reported at once, not
        # after six timeouts: a store call would hold the account's lease for a
        # minute, and rotation retries on its own schedule (retry_initial..retry_max).
        if isinstance(
            caught, botocore.exceptions.ConnectTimeoutError | botocore.exceptions.ReadTimeoutError
        ):
            return None
        delay = self._handler.needs_retry(**kwargs)
        if not isinstance(delay, int | float) or isinstance(delay, bool):
            return cast("bool | None", delay)  # no retry: botocore's answer as it is
        response = kwargs.get("response")
        parsed = response[1] if isinstance(response, tuple) else {}
        code = (parsed.get("Error") or {}).get("Code") or type(caught).__name__
        operation = getattr(kwargs.get("operation"), "name", "?")
        _log.info(
            "aws store %s: %s answered %s, retrying in %.2fs", self._store, operation, code, delay
        )
        if not self._waiter.sleep(float(delay)):
            return None  # the store is closing: report this answer now
        return 0  # waited already; botocore's own sleep(0) returns at once


def _quiet_wire_logs() -> None:
    """botocore logs whole request and response bodies at DEBUG (SecretString
    included): those loggers never go below INFO, whatever the root level."""
    for name in ("botocore.endpoint", "botocore.parsers", "botocore.hooks"):
        wire = logging.getLogger(name)
        if wire.getEffectiveLevel() < logging.INFO:
            wire.setLevel(logging.INFO)


def code_of(exc: Any) -> str:
    """The error code of a botocore ClientError."""
    error = (getattr(exc, "response", None) or {}).get("Error", {})
    code = str(error.get("Code", ""))
    if code.isdigit():
        # an error body botocore could not parse (moto answers auth failures of JSON
        # services in XML): the code is inside it
        found = re.search(r"<Code>(\w+)</Code>", str(error.get("Message", "")))
        if found:
            return found.group(1)
        if code == "403":
            return "AccessDeniedException"
    return code


def mapped(
    exc: Exception, settings: AwsStoreSettings, *, store: str, operation: str, secret: str
) -> StoreError:
    """The one place botocore errors become typed store errors (scrubbed)."""
    import botocore.exceptions

    where = settings.endpoint_url or f"Secrets Manager in {settings.region or 'the default region'}"
    action = f"secretsmanager:{operation} on {secret}"
    if isinstance(exc, botocore.exceptions.ClientError):
        code = code_of(exc)
        raw = str((exc.response.get("Error") or {}).get("Message") or "")
        inner = re.search(r"<Message>(.*?)</Message>", raw)
        message = scrub(inner.group(1) if inner else raw)
        if code == "ResourceNotFoundException":
            return NotFound(f"{secret} not found", store=store, path=secret)
        if code == "ResourceExistsException":
            return Exists(f"{secret} exists", store=store, path=secret)
        if code == "InvalidParameterException" and operation == "UpdateSecretVersionStage":
            return StageNotMoved(message, store=store, path=secret)
        if code in _DENIED:
            return StorePermissionError(
                f"permission denied: {action} (the IAM policy does not allow it)",
                store=store,
                path=secret,
            )
        if code in _AUTH:
            return StoreAuthError(
                f"AWS refused the credentials ({code}) for {action}: check the access key, "
                "profile or role",
                store=store,
                path=secret,
            )
        if code in _THROTTLED or code in _SERVER_SIDE:
            return StoreUnavailable(
                f"{where} kept answering {code} to {action}", store=store, path=secret
            )
        if code in ("DecryptionFailure", "EncryptionFailure", "KMSInvalidStateException"):
            return StorePermissionError(
                f"{action}: the KMS key cannot be used ({code}: {message}); check kms_key_id "
                "and the key policy",
                store=store,
                path=secret,
            )
        return StoreError(
            f"{action} failed: {code}{': ' + message if message else ''}", store=store, path=secret
        )
    if isinstance(
        exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return StoreAuthError(
            "no AWS credentials found (environment, shared config/profile, or instance/pod role)",
            store=store,
        )
    if isinstance(exc, botocore.exceptions.ProfileNotFound):
        return StoreAuthError(f"AWS profile {settings.profile!r} not found", store=store)
    if isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectionClosedError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.HTTPClientError,
    ):
        return StoreUnavailable(
            f"cannot reach {where} ({action}): {type(exc).__name__}", store=store, path=secret
        )
    if isinstance(exc, botocore.exceptions.NoRegionError):
        return StoreError(
            "no AWS region: set region on the store, or AWS_REGION in the environment",
            store=store,
        )
    return StoreError(f"{action} failed: {type(exc).__name__}", store=store, path=secret)
