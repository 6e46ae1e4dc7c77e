"""Extension objects, created unbound and attached in create_app()."""

from api.errors import MeterApi

api = MeterApi()
