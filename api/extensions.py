"""Extension objects, created unbound and attached in create_app()."""

from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_cls

from api.errors import MeterApi


def schema_name(schema) -> str | None:
    """Name a schema after its class; inline variants made with `only` or `exclude`."""
    if getattr(schema, "only", None) or getattr(schema, "exclude", None):
        return None
    name = resolve_schema_cls(schema).__name__
    return name[: -len("Schema")] if name.endswith("Schema") and name != "Schema" else name


api = MeterApi(
    spec_kwargs={"marshmallow_plugin": MarshmallowPlugin(schema_name_resolver=schema_name)}
)
