"""A faster `__init__` for the domain's frozen, slotted dataclasses.

A frozen dataclass's generated `__init__` stores each field with
`object.__setattr__(self, name, value)`, which looks the attribute up again on every
call. Commands, events, lots and member states are built for every command and every
replayed event, so `fast_init` replaces that `__init__` with one that calls each slot's
own descriptor (`Cls.field.__set__`), looked up once per class: about twice as fast,
and the class stays a frozen, slotted dataclass with the same equality, hash, repr,
signature and error messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# The dataclass-generated `__init__` of each class given a fast one: the reference the
# unit tests compare the fast one against.
ORIGINAL_INITS: dict[type, Callable[..., None]] = {}

_FACTORY = object()  # a default_factory field's parameter default, as dataclasses does


def fast_init(cls: type[T]) -> type[T]:
    """Class decorator, applied on top of `@dataclass(frozen=True, slots=True)`."""
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen and "__slots__" in cls.__dict__, f"{cls.__name__} must be a frozen, slotted dataclass"
    assert not hasattr(cls, "__post_init__"), f"{cls.__name__}: __post_init__ is not supported"
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    assert all(f.init and not f.kw_only for f in fields), f"{cls.__name__}: every field must be a plain init field"

    namespace: dict[str, Any] = {"_FACTORY": _FACTORY}
    params_src, body = [], []
    for f in fields:
        namespace[f"_set_{f.name}"] = getattr(cls, f.name).__set__  # the slot's member descriptor
        if f.default is not dataclasses.MISSING:
            namespace[f"_default_{f.name}"] = f.default
            params_src.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{f.name}"] = f.default_factory
            params_src.append(f"{f.name}=_FACTORY")
            body.append(f"    if {f.name} is _FACTORY:\n        {f.name} = _factory_{f.name}()\n")
        else:
            params_src.append(f.name)
        body.append(f"    _set_{f.name}(self, {f.name})\n")
    source = f"def __init__(self, {', '.join(params_src)}):\n" + ("".join(body) or "    pass\n")
    exec(source, namespace)  # noqa: S102 - generated from the field names only, as dataclasses itself does
    init = namespace["__init__"]
    original = cls.__init__  # type: ignore[misc]
    init.__qualname__ = original.__qualname__  # error messages name `Cls.__init__()`, as before
    init.__annotations__ = original.__annotations__
    init.__doc__ = original.__doc__
    ORIGINAL_INITS[cls] = original
    cls.__init__ = init  # type: ignore[misc]
    return cls
