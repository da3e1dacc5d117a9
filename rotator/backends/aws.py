"""The AWS Secrets Manager store (boto3).

Each path is one secret (``prefix`` + path) holding the data as a JSON
SecretString; its version is the VersionId that carries the ``AWSCURRENT``
stage. Compare-and-set works the way AWS's own rotation does:

1. ``PutSecretValue`` with ``VersionStages=["AWSPENDING"]`` and a
   ``ClientRequestToken`` derived from (path, expected version, data), so a retry
   of the same write, even from another process, is idempotent;
2. ``UpdateSecretVersionStage(AWSCURRENT, MoveToVersionId=new,
   RemoveFromVersionId=expected)``, which fails if someone else moved
   ``AWSCURRENT`` in between -> :class:`~rotator.errors.StoreConflict`;
3. the ``AWSPENDING`` label is taken off again.

A missing secret is created with the tag ``managed-by=rotator`` (and
``kms_key_id`` when set); an existing secret without the tag is refused unless
the sink says ``adopt``. An unchanged value writes nothing (Secrets Manager
bills and rate-limits versions). Throttling is retried with exponential
backoff and jitter; :func:`set_testing` makes the backoff instant. Reads always
ask for ``VersionStage=AWSCURRENT``. botocore errors are mapped once, in
:func:`_mapped`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from rotator.backends.base import (
    Record,
    Validation,
    ValidationStatus,
    Version,
    WriteResult,
    canonical_json,
    reason,
    require_json,
)
from rotator.errors import (
    StoreAuthError,
    StoreConflict,
    StoreError,
    StoreNotManaged,
    StorePermissionError,
    StoreUnavailable,
    scrub,
)

__all__ = ["MANAGED_BY", "AwsStore", "set_testing"]

MANAGED_BY = ("managed-by", "rotator")
_log = logging.getLogger("rotator.backends.aws")
_T = TypeVar("_T")
_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
_TOKEN_NAMESPACE = uuid.UUID("5b0d7f0e-8a4e-4c55-9a53-6f1d0c2b7a11")

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

#: attempts per call when throttled, and the backoff (seconds): base * 2**n, capped
ATTEMPTS = 6
_BACKOFF_BASE = 0.2
_BACKOFF_CAP = 5.0
_testing = False


def set_testing(enabled: bool) -> None:
    """Make throttling backoff instant (tests). Public, like stamina's switch."""
    global _testing  # noqa: PLW0603 - one process-wide switch, on purpose
    _testing = enabled


def _backoff(attempt: int) -> float:
    return 0.0 if _testing else random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))  # noqa: S311


class AwsStore:
    """Secrets named ``prefix`` + path; versions are VersionIds (str)."""

    kind: ClassVar[str] = "aws"

    def __init__(
        self,
        name: str,
        settings: Any,
        *,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.settings = settings
        self.prefix: str = settings.prefix
        self._sleep = sleep
        self._client = client if client is not None else self._default_client()

    def _default_client(self) -> Any:
        import boto3
        import botocore.config
        import botocore.exceptions

        _quiet_wire_logs()
        timeout = self.settings.timeout.total_seconds()
        config = botocore.config.Config(
            # throttling is retried here, with our own backoff (and testing switch)
            retries={"total_max_attempts": 1},
            connect_timeout=timeout,
            read_timeout=timeout,
            # one connection per concurrent worker, instead of botocore's 10
            max_pool_connections=64,
        )
        try:
            session = boto3.session.Session(
                profile_name=self.settings.profile, region_name=self.settings.region
            )
            return session.client(
                "secretsmanager", endpoint_url=self.settings.endpoint_url, config=config
            )
        except botocore.exceptions.ProfileNotFound:
            raise StoreAuthError(
                f"AWS profile {self.settings.profile!r} is not in the shared config files "
                "(~/.aws/config, ~/.aws/credentials)",
                store=self.name,
            ) from None
        except botocore.exceptions.NoRegionError:
            raise StoreError(
                "no AWS region: set region on the store, or AWS_REGION in the environment",
                store=self.name,
            ) from None

    # -- names and calls ------------------------------------------------------------

    def _secret_name(self, path: str) -> str:
        name = self.prefix + path
        if not _NAME.match(name) or ".." in name:
            raise StoreError(
                f"secret name {name!r} is not valid for Secrets Manager (use letters, digits "
                "and /_+=.@-, at most 512 characters)",
                store=self.name,
                path=path,
            )
        return name

    def _call(self, operation: str, secret: str, **kwargs: Any) -> dict[str, Any]:
        """One API call; throttling and server errors are retried with backoff."""
        import botocore.exceptions

        method = getattr(self._client, _snake(operation))
        for attempt in range(ATTEMPTS):
            try:
                answer: dict[str, Any] = method(**kwargs)
                return answer
            except botocore.exceptions.ClientError as exc:
                code = _code(exc)
                if (code in _THROTTLED or code in _SERVER_SIDE) and attempt < ATTEMPTS - 1:
                    delay = _backoff(attempt)
                    _log.info(
                        "aws store %s: %s %s: %s, retrying in %.2fs",
                        self.name,
                        operation,
                        secret,
                        code,
                        delay,
                    )
                    self._sleep(delay)
                    continue
                raise _mapped(exc, self, operation, secret) from None
            except (botocore.exceptions.BotoCoreError, ValueError) as exc:
                raise _mapped(exc, self, operation, secret) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _current(self, secret: str) -> tuple[dict[str, str], str] | None:
        """(data, VersionId) of AWSCURRENT; None if the secret or its value is missing."""
        try:
            answer = self._call(
                "GetSecretValue", secret, SecretId=secret, VersionStage="AWSCURRENT"
            )
        except _NotFound:
            return None
        text = answer.get("SecretString")
        try:
            loaded = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            loaded = None
        if not isinstance(loaded, dict):
            raise StoreError(
                f"secret {secret} does not hold a JSON object (written by something else?)",
                store=self.name,
                path=secret,
            )
        data = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in loaded.items()}
        return data, str(answer["VersionId"])

    # -- SecretStore -------------------------------------------------------------------

    def read(self, path: str, *, fmt: str = "json") -> Record | None:
        require_json(self.name, "Secrets Manager", fmt, path)
        current = self._current(self._secret_name(path))
        if current is None:
            return None
        return Record(data=current[0], version=current[1])

    def write(
        self,
        path: str,
        data: Mapping[str, str],
        *,
        expected_version: Version | None,
        fmt: str = "json",
        adopt: bool = False,
    ) -> WriteResult:
        require_json(self.name, "Secrets Manager", fmt, path)
        secret = self._secret_name(path)
        new = {str(k): str(v) for k, v in data.items()}
        body = canonical_json(new)
        try:
            described = self._call("DescribeSecret", secret, SecretId=secret)
        except _NotFound:
            described = None
        if described is None:
            if expected_version is not None:
                raise StoreConflict(
                    f"secret {secret} is gone (expected version {expected_version})",
                    store=self.name,
                    path=path,
                )
            return self._create(secret, path, body)

        tags = {t.get("Key"): t.get("Value") for t in described.get("Tags") or []}
        marked = tags.get(MANAGED_BY[0]) == MANAGED_BY[1]
        if not marked and not adopt:
            raise StoreNotManaged(
                f"secret {secret} exists and was not created by rotator (no tag "
                f"{MANAGED_BY[0]}={MANAGED_BY[1]}); set adopt: true on the sink to take it over",
                store=self.name,
                path=path,
            )
        if described.get("DeletedDate"):
            raise StoreError(
                f"secret {secret} is scheduled for deletion; restore it "
                "(aws secretsmanager restore-secret) or choose another path",
                store=self.name,
                path=path,
            )
        current = self._current(secret)
        current_version = current[1] if current else None
        if expected_version is None:
            if current is not None and not adopt:
                raise StoreConflict(
                    f"secret {secret} already exists (create-only write lost)",
                    store=self.name,
                    path=path,
                )
        elif str(expected_version) != current_version:
            raise StoreConflict(
                f"secret {secret} moved on from version {expected_version} (compare-and-set lost)",
                store=self.name,
                path=path,
            )
        if not marked:
            self._call(
                "TagResource",
                secret,
                SecretId=secret,
                Tags=[{"Key": MANAGED_BY[0], "Value": MANAGED_BY[1]}],
            )
        if current is not None and current[0] == new:
            return WriteResult(current[1], changed=False)
        token = _request_token(secret, current_version, body)
        if current is None:
            # a secret with no AWSCURRENT value yet: the first value becomes current
            answer = self._call(
                "PutSecretValue",
                secret,
                SecretId=secret,
                ClientRequestToken=token,
                SecretString=body,
            )
            return WriteResult(str(answer["VersionId"]), changed=True)
        self._call(
            "PutSecretValue",
            secret,
            SecretId=secret,
            ClientRequestToken=token,
            SecretString=body,
            VersionStages=["AWSPENDING"],
        )
        try:
            self._call(
                "UpdateSecretVersionStage",
                secret,
                SecretId=secret,
                VersionStage="AWSCURRENT",
                MoveToVersionId=token,
                RemoveFromVersionId=current_version,
            )
        except _InvalidParameter:
            now = self._current(secret)
            if now is not None and now[1] == token:
                pass  # our own earlier attempt moved it: an idempotent retry
            else:
                self._drop_pending(secret, token)
                raise StoreConflict(
                    f"secret {secret}: AWSCURRENT moved away from {current_version} "
                    "(compare-and-set lost)",
                    store=self.name,
                    path=path,
                ) from None
        self._drop_pending(secret, token)
        return WriteResult(token, changed=True)

    def _create(self, secret: str, path: str, body: str) -> WriteResult:
        token = _request_token(secret, None, body)
        kwargs: dict[str, Any] = {
            "Name": secret,
            "ClientRequestToken": token,
            "SecretString": body,
            "Tags": [{"Key": MANAGED_BY[0], "Value": MANAGED_BY[1]}],
        }
        if self.settings.kms_key_id:
            kwargs["KmsKeyId"] = self.settings.kms_key_id
        try:
            answer = self._call("CreateSecret", secret, **kwargs)
        except _Exists:
            raise StoreConflict(
                f"secret {secret} was created by someone else meanwhile (create-only write lost)",
                store=self.name,
                path=path,
            ) from None
        return WriteResult(str(answer["VersionId"]), changed=True)

    def _drop_pending(self, secret: str, version_id: str) -> None:
        try:
            self._call(
                "UpdateSecretVersionStage",
                secret,
                SecretId=secret,
                VersionStage="AWSPENDING",
                RemoveFromVersionId=version_id,
            )
        except StoreError as exc:  # cosmetic: the next put moves the label anyway
            _log.info("aws store %s: could not drop AWSPENDING on %s: %s", self.name, secret, exc)

    def delete(self, path: str) -> None:
        secret = self._secret_name(path)
        try:
            self._call("DeleteSecret", secret, SecretId=secret, ForceDeleteWithoutRecovery=True)
        except _NotFound:
            return

    def validate(self, probe_path: str | None = None) -> Validation:
        """READY when the credentials work and (with a probe path) the secret is
        readable; ERROR with the reason otherwise; UNKNOWN for what AWS cannot
        tell without writing (whether PutSecretValue will be allowed)."""
        secret = self._secret_name(probe_path) if probe_path else None
        try:
            if secret is None:
                # a secret that does not exist: "not found" proves the credentials
                # and the policy on the prefix, without needing ListSecrets
                probe = self._secret_name("rotator-validate-probe")
                with contextlib.suppress(_NotFound):
                    self._call("DescribeSecret", probe, SecretId=probe)
                return Validation(
                    ValidationStatus.READY, f"credentials accepted for {self.prefix or '/'}*"
                )
            try:
                described = self._call("DescribeSecret", secret, SecretId=secret)
            except _NotFound:
                return Validation(
                    ValidationStatus.UNKNOWN,
                    f"credentials accepted; {secret} does not exist yet and will be created "
                    "(secretsmanager:CreateSecret and TagResource not checked)",
                )
        except StoreError as exc:
            return Validation(ValidationStatus.ERROR, reason(exc, self.name))
        tags = {t.get("Key"): t.get("Value") for t in described.get("Tags") or []}
        if tags.get(MANAGED_BY[0]) != MANAGED_BY[1]:
            return Validation(
                ValidationStatus.UNKNOWN,
                f"{secret} exists without the tag {MANAGED_BY[0]}={MANAGED_BY[1]}: "
                "writes are refused unless the sink sets adopt: true",
            )
        try:
            self._current(secret)
        except StoreError as exc:
            return Validation(ValidationStatus.ERROR, reason(exc, self.name))
        return Validation(
            ValidationStatus.READY,
            f"credentials accepted; {secret} is readable and managed by rotator "
            "(write permission is checked by the first write)",
        )

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if callable(close):
            close()


# -- helpers ---------------------------------------------------------------------------


class _NotFound(StoreError):
    """ResourceNotFoundException: an expected answer, handled by the callers."""


class _Exists(StoreError):
    """ResourceExistsException on CreateSecret."""


class _InvalidParameter(StoreError):
    """InvalidParameterException, e.g. RemoveFromVersionId no longer AWSCURRENT."""


def _quiet_wire_logs() -> None:
    """botocore logs whole request and response bodies at DEBUG (SecretString
    included): those two loggers never go below INFO, whatever the root level."""
    for name in ("botocore.endpoint", "botocore.parsers", "botocore.hooks"):
        wire = logging.getLogger(name)
        if wire.getEffectiveLevel() < logging.INFO:
            wire.setLevel(logging.INFO)


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


def _code(exc: Any) -> str:
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


def _request_token(secret: str, expected: str | None, body: str) -> str:
    """The same logical write always gets the same token (idempotent retries)."""
    digest = hashlib.sha256(f"{secret}\0{expected or ''}\0{body}".encode()).hexdigest()
    return str(uuid.uuid5(_TOKEN_NAMESPACE, digest))


def _mapped(exc: Exception, store: AwsStore, operation: str, secret: str) -> StoreError:
    """The one place botocore errors become typed store errors."""
    import botocore.exceptions

    where = (
        store.settings.endpoint_url
        or f"Secrets Manager in {store.settings.region or 'the default region'}"
    )
    action = f"secretsmanager:{operation} on {secret}"
    if isinstance(exc, botocore.exceptions.ClientError):
        code = _code(exc)
        raw = str((exc.response.get("Error") or {}).get("Message") or "")
        inner = re.search(r"<Message>(.*?)</Message>", raw)
        message = scrub(inner.group(1) if inner else raw)
        if code == "ResourceNotFoundException":
            return _NotFound(f"{secret} not found", store=store.name, path=secret)
        if code == "ResourceExistsException":
            return _Exists(f"{secret} exists", store=store.name, path=secret)
        if code == "InvalidParameterException" and operation == "UpdateSecretVersionStage":
            return _InvalidParameter(message, store=store.name, path=secret)
        if code in _DENIED:
            return StorePermissionError(
                f"permission denied: {action} (the IAM policy does not allow it)",
                store=store.name,
                path=secret,
            )
        if code in _AUTH:
            return StoreAuthError(
                f"AWS refused the credentials ({code}) for {action}: check the access key, "
                "profile or role",
                store=store.name,
                path=secret,
            )
        if code in _THROTTLED or code in _SERVER_SIDE:
            return StoreUnavailable(
                f"{where} kept answering {code} to {action}", store=store.name, path=secret
            )
        if code in ("DecryptionFailure", "EncryptionFailure", "KMSInvalidStateException"):
            return StorePermissionError(
                f"{action}: the KMS key cannot be used ({code}: {message}); check kms_key_id "
                "and the key policy",
                store=store.name,
                path=secret,
            )
        return StoreError(
            f"{action} failed: {code}{': ' + message if message else ''}",
            store=store.name,
            path=secret,
        )
    if isinstance(
        exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return StoreAuthError(
            "no AWS credentials found (environment, shared config/profile, or instance/pod role)",
            store=store.name,
        )
    if isinstance(exc, botocore.exceptions.ProfileNotFound):
        return StoreAuthError(f"AWS profile {store.settings.profile!r} not found", store=store.name)
    if isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectionClosedError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.HTTPClientError,
    ):
        return StoreUnavailable(
            f"cannot reach {where} ({action}): {type(exc).__name__}",
            store=store.name,
            path=secret,
        )
    if isinstance(exc, botocore.exceptions.NoRegionError):
        return StoreError(
            "no AWS region: set region on the store, or AWS_REGION in the environment",
            store=store.name,
        )
    return StoreError(f"{action} failed: {type(exc).__name__}", store=store.name, path=secret)
