"""The AWS Secrets Manager store.

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
bills and rate-limits versions). Reads always ask for
``VersionStage=AWSCURRENT``. Every path is held to
:data:`~rotator.backends.base.PATH_RULE`. The SDK (its typed Protocol, its
retries, its error mapping) is in :mod:`rotator.backends.aws_client`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from rotator.backends.aws_client import (
    Exists,
    NotFound,
    SecretsManager,
    StageNotMoved,
    build_client,
    mapped,
)
from rotator.backends.base import (
    Record,
    Validation,
    ValidationStatus,
    Version,
    WriteResult,
    canonical_json,
    checked_path,
    reason,
    record_data,
    require_json,
    store_data,
)
from rotator.errors import StoreConflict, StoreError, StoreNotManaged
from rotator.tokens import ViewValue
from rotator.waits import Waiter

if TYPE_CHECKING:
    from rotator.config.models import AwsStoreSettings

__all__ = ["MANAGED_BY", "AwsStore"]

MANAGED_BY = ("managed-by", "rotator")
_TAGS = [{"Key": MANAGED_BY[0], "Value": MANAGED_BY[1]}]
_log = logging.getLogger("rotator.backends.aws")
_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
_TOKEN_NAMESPACE = uuid.UUID("5b0d7f0e-8a4e-4c55-9a53-6f1d0c2b7a11")


class AwsStore:
    """Secrets named ``prefix`` + path; versions are VersionIds (str)."""

    kind: ClassVar[str] = "aws"

    def __init__(
        self,
        name: str,
        settings: AwsStoreSettings,
        *,
        client: SecretsManager | None = None,
        waiter: Waiter | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.prefix: str = settings.prefix
        # botocore's retry waits (throttling): stopped by close(), instant in tests
        self._waiter = waiter if waiter is not None else Waiter()
        self._client = client if client is not None else build_client(settings, name, self._waiter)

    # -- names and calls ------------------------------------------------------------

    def _secret_name(self, path: str) -> str:
        checked_path(path, store=self.name)
        name = self.prefix + path
        if not _NAME.fullmatch(name) or ".." in name:
            raise StoreError(
                f"secret name {name!r} is not valid for Secrets Manager (use letters, digits "
                "and /_+=.@-, at most 512 characters)",
                store=self.name,
                path=path,
            )
        return name

    def _call(
        self, operation: str, secret: str, fn: Callable[[SecretsManager], Mapping[str, Any]]
    ) -> Mapping[str, Any]:
        """One API call (botocore retries throttling); its errors mapped once."""
        import botocore.exceptions

        try:
            return fn(self._client)
        except (
            botocore.exceptions.ClientError,
            botocore.exceptions.BotoCoreError,
            ValueError,
        ) as exc:
            raise mapped(
                exc, self.settings, store=self.name, operation=operation, secret=secret
            ) from None

    def _current(self, secret: str) -> tuple[dict[str, ViewValue], str] | None:
        """(data, VersionId) of AWSCURRENT; None if the secret or its value is missing."""
        try:
            answer = self._call(
                "GetSecretValue",
                secret,
                lambda c: c.get_secret_value(SecretId=secret, VersionStage="AWSCURRENT"),
            )
        except NotFound:
            return None
        return _json_object(answer.get("SecretString"), secret, self.name), str(answer["VersionId"])

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
        data: Mapping[str, ViewValue],
        *,
        expected_version: Version | None,
        fmt: str = "json",
        adopt: bool = False,
    ) -> WriteResult:
        require_json(self.name, "Secrets Manager", fmt, path)
        secret = self._secret_name(path)
        new = store_data(data)
        body = canonical_json(new)
        try:
            described = self._call(
                "DescribeSecret", secret, lambda c: c.describe_secret(SecretId=secret)
            )
        except NotFound:
            described = None
        if described is None:
            if expected_version is not None:
                raise StoreConflict(
                    f"secret {secret} is gone (expected version {expected_version})",
                    store=self.name,
                    path=path,
                )
            return self._create(secret, path, body)

        marked = _marked(described)
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
        lost = _cas_lost(secret, expected_version, current[1] if current else None, adopt)
        if lost:
            raise StoreConflict(lost, store=self.name, path=path)
        if not marked:
            self._call("TagResource", secret, lambda c: c.tag_resource(SecretId=secret, Tags=_TAGS))
        if current is not None and current[0] == new:
            return WriteResult(current[1], changed=False)
        token = _request_token(secret, current[1] if current else None, body)
        if current is None:
            # a secret with no AWSCURRENT value yet: the first value becomes current
            answer = self._call(
                "PutSecretValue",
                secret,
                lambda c: c.put_secret_value(
                    SecretId=secret, ClientRequestToken=token, SecretString=body
                ),
            )
            return WriteResult(str(answer["VersionId"]), changed=True)
        previous = current[1]
        self._call(
            "PutSecretValue",
            secret,
            lambda c: c.put_secret_value(
                SecretId=secret,
                ClientRequestToken=token,
                SecretString=body,
                VersionStages=["AWSPENDING"],
            ),
        )
        try:
            self._call(
                "UpdateSecretVersionStage",
                secret,
                lambda c: c.update_secret_version_stage(
                    SecretId=secret,
                    VersionStage="AWSCURRENT",
                    MoveToVersionId=token,
                    RemoveFromVersionId=previous,
                ),
            )
        except StageNotMoved:
            now = self._current(secret)
            if now is not None and now[1] == token:
                pass  # our own earlier attempt moved it: an idempotent retry
            else:
                self._drop_pending(secret, token)
                raise StoreConflict(
                    f"secret {secret}: AWSCURRENT moved away from {previous} "
                    "(compare-and-set lost)",
                    store=self.name,
                    path=path,
                ) from None
        self._drop_pending(secret, token)
        return WriteResult(token, changed=True)

    def _create(self, secret: str, path: str, body: str) -> WriteResult:
        token = _request_token(secret, None, body)
        kms = {"KmsKeyId": self.settings.kms_key_id} if self.settings.kms_key_id else {}
        try:
            answer = self._call(
                "CreateSecret",
                secret,
                lambda c: c.create_secret(
                    Name=secret, ClientRequestToken=token, SecretString=body, Tags=_TAGS, **kms
                ),
            )
        except Exists:
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
                lambda c: c.update_secret_version_stage(
                    SecretId=secret, VersionStage="AWSPENDING", RemoveFromVersionId=version_id
                ),
            )
        except StoreError as exc:  # cosmetic: the next put moves the label anyway
            _log.info("aws store %s: could not drop AWSPENDING on %s: %s", self.name, secret, exc)

    def delete(self, path: str) -> None:
        secret = self._secret_name(path)
        try:
            self._call(
                "DeleteSecret",
                secret,
                lambda c: c.delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True),
            )
        except NotFound:
            return

    def validate(self, probe_path: str | None = None) -> Validation:
        """READY when the credentials work and (with a probe path) the secret is
        readable; ERROR with the reason otherwise; UNKNOWN for what AWS cannot
        tell without writing (whether PutSecretValue will be allowed)."""
        try:
            secret = self._secret_name(probe_path) if probe_path else None
            if secret is None:
                # a secret that does not exist: "not found" proves the credentials
                # and the policy on the prefix, without needing ListSecrets
                probe = self._secret_name("rotator-validate-probe")
                with contextlib.suppress(NotFound):
                    self._call("DescribeSecret", probe, lambda c: c.describe_secret(SecretId=probe))
                return Validation(
                    ValidationStatus.READY, f"credentials accepted for {self.prefix or '/'}*"
                )
            try:
                described = self._call(
                    "DescribeSecret", secret, lambda c: c.describe_secret(SecretId=secret)
                )
            except NotFound:
                return Validation(
                    ValidationStatus.UNKNOWN,
                    f"credentials accepted; {secret} does not exist yet and will be created "
                    "(secretsmanager:CreateSecret and TagResource not checked)",
                )
        except StoreError as exc:
            return Validation(ValidationStatus.ERROR, reason(exc, self.name))
        if not _marked(described):
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
        self._waiter.stop()  # a retry waiting out throttling gives up now
        self._client.close()


# -- helpers ---------------------------------------------------------------------------


def _request_token(secret: str, expected: str | None, body: str) -> str:
    """The same logical write always gets the same token (idempotent retries)."""
    digest = hashlib.sha256(f"{secret}\0{expected or ''}\0{body}".encode()).hexdigest()
    return str(uuid.uuid5(_TOKEN_NAMESPACE, digest))


def _marked(described: Mapping[str, Any]) -> bool:
    """Whether DescribeSecret shows the tag rotator puts on the secrets it creates."""
    tags = {t.get("Key"): t.get("Value") for t in described.get("Tags") or []}
    return tags.get(MANAGED_BY[0]) == MANAGED_BY[1]


def _cas_lost(secret: str, expected: Version | None, current: str | None, adopt: bool) -> str:
    """Why a write expecting ``expected`` loses against AWSCURRENT ``current`` ("": it may go)."""
    if expected is None:
        if current is not None and not adopt:
            return f"secret {secret} already exists (create-only write lost)"
        return ""
    if str(expected) != current:
        return f"secret {secret} moved on from version {expected} (compare-and-set lost)"
    return ""


def _json_object(text: object, secret: str, store: str) -> dict[str, ViewValue]:
    """A SecretString as the store's data; a value rotator cannot have written is an error."""
    try:
        loaded = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        loaded = None
    if not isinstance(loaded, dict):
        raise StoreError(
            f"secret {secret} does not hold a JSON object (written by something else?)",
            store=store,
            path=secret,
        )
    return record_data(loaded)


if TYPE_CHECKING:
    from rotator.backends.base import StoreFactory

    #: mypy's proof that the class is a store factory (see rotator.backends.registry)
    _CONFORMS: StoreFactory = AwsStore
