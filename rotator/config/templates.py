"""An account that differs from an earlier one in a few keys is validated in those keys.

Accounts filled from one ``defaults`` differ in their name, client id and sink
paths; one pydantic ``model_validate`` each, and the sharing of its values, was
most of the validation of a 100,000-account start (bench/results.md, "Ninth
round"). :class:`Templates` keeps, per provider model and list of keys, the first
account validated whole (its *template*, raw mapping and model); a later account
with the same keys is compared with the template's raw mapping value by value,
and only the keys that differ are validated, each alone, into a copy of the
template's model, whose model validators then run again.

That gives what ``model_validate`` gives only where pydantic validates a field
without looking at the others, so the fast path is taken only when:

- the model's configuration changes nothing about how a field validates alone
  (:data:`_NEUTRAL_CONFIG`), and it has no private attributes;
- every differing key is a field under its own name (no alias) with no field
  validator of the model (a validator in the field's ``Annotated`` type is part
  of the type, and runs alone too);
- every model validator runs "after", takes the model only and returns it;
- the values are compared strictly (:func:`same`: ``1`` is not ``True`` nor
  ``1.0``, ``-0.0`` is not ``0.0``, a timestamp is never "the same").

Anything raised on the fast path sends the account to ``model_validate``, so a
refusal is always the slow path's own (its message, its key path), and the
hypothesis tests in tests/config/test_templates.py hold both paths equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter

from rotator.config.sharing import shared_values

__all__ = ["MAX_DIFFERENT", "Templates", "same"]

#: keys that may differ from the template; past them the whole model is validated
#: (and the account becomes the template: accounts written alike follow each other)
MAX_DIFFERENT = 4
#: model configuration that does not change how one field validates on its own
_NEUTRAL_CONFIG = frozenset({"extra", "frozen", "populate_by_name", "title"})


def same(a: Any, b: Any) -> bool:
    """True when ``a`` and ``b`` are the same YAML value, type for type.

    Only the types YAML and JSON make for a configuration (str, int, bool, float,
    None, lists and mappings) are compared; anything else is "not the same", so
    it is validated on its own.
    """
    if a is b:
        return True
    kind = type(a)
    if kind is not type(b) or kind not in _COMPARED:
        return False
    if a != b:  # the common answer for a value that differs, in C
        return False
    if kind is float:
        # -0.0 equals 0.0 but is another value (NaN was told apart above: nan != nan)
        return math.copysign(1.0, a) == math.copysign(1.0, b)
    if kind is list:
        # equal, but 1 equals True and 1.0: the items' types too
        return all(same(x, y) for x, y in zip(a, b, strict=True))
    if kind is dict:
        return all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    return True  # str, int, bool: equal and of one type


_COMPARED = frozenset({str, int, bool, float, list, dict})


class _Plan:
    """What the fast path may do for one model: its lone fields and after-validators."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model
        decorators = model.__pydantic_decorators__
        self.after: list[Any] = []
        usable = set(model.model_config) <= _NEUTRAL_CONFIG and not model.__private_attributes__
        for decorator in decorators.model_validators.values():
            if decorator.info.mode != "after" or decorator.shim is not None:
                usable = False
            self.after.append(decorator.func)
        usable = usable and not decorators.root_validators and not decorators.computed_fields
        watched: set[str] = set()
        for field_validator in decorators.field_validators.values():
            watched.update(field_validator.info.fields)
        #: field -> its validator alone (built on first use)
        self.lone: dict[str, TypeAdapter[Any] | None] = {}
        self.alone_ok: frozenset[str] = frozenset(
            name
            for name, info in model.model_fields.items()
            if usable and name not in watched and info.alias in (None, name)
        )

    def adapter(self, field: str) -> TypeAdapter[Any]:
        adapter = self.lone.get(field)
        if adapter is None:
            info = self.model.model_fields[field]
            field_type: Any = Annotated[info.annotation, info]
            adapter = self.lone[field] = TypeAdapter(field_type)
        return adapter


@dataclass(slots=True)
class _Template:
    raw: dict[Any, Any]
    model: BaseModel


class Templates:
    """The accounts of one load, validated through templates; values shared in ``seen``
    (:func:`~rotator.config.sharing.shared_values`)."""

    def __init__(self, seen: dict[Any, Any]) -> None:
        self.seen = seen
        self._plans: dict[type[BaseModel], _Plan] = {}
        self._templates: dict[tuple[type[BaseModel], tuple[Any, ...]], _Template] = {}
        #: accounts validated whole and through a template (the tests look)
        self.whole = 0
        self.fast = 0

    def validate(self, model: type[BaseModel], raw: dict[Any, Any]) -> Any:
        """``model.model_validate(raw)``, its values shared; raises what that raises."""
        key = (model, tuple(raw))  # the keys in their order: accounts written alike
        template = self._templates.get(key)
        if template is not None:
            found = self._from_template(model, raw, template)
            if found is not None:
                self.fast += 1
                return found
        validated = model.model_validate(raw)  # a ValidationError goes out as it is
        self.whole += 1
        shared = shared_values(validated, self.seen)
        self._templates[key] = _Template(raw, shared)
        return shared

    def _from_template(
        self, model: type[BaseModel], raw: dict[Any, Any], template: _Template
    ) -> BaseModel | None:
        """The account as a copy of the template's model, or None: validate it whole."""
        plan = self._plans.get(model)
        if plan is None:
            plan = self._plans[model] = _Plan(model)
        before = template.raw
        different = [
            key
            for key, value in raw.items()
            if value is not before[key] and not same(value, before[key])
        ]
        if len(different) > MAX_DIFFERENT or not plan.alone_ok.issuperset(different):
            return None
        try:
            values = {key: plan.adapter(key).validate_python(raw[key]) for key in different}
            found = model.__new__(model)
            fields = dict(template.model.__dict__)
            fields.update(values)
            object.__setattr__(found, "__dict__", fields)
            object.__setattr__(
                found, "__pydantic_fields_set__", template.model.__pydantic_fields_set__
            )
            object.__setattr__(found, "__pydantic_extra__", None)
            object.__setattr__(found, "__pydantic_private__", None)
            for check in plan.after:
                if check(found) is not found:
                    return None
        except Exception:
            return None
        shared: BaseModel = shared_values(found, self.seen, only=different)
        return shared
