"""Serve the Swagger UI scripts and styles from the swagger-ui-bundle package.

flask-smorest renders /docs with links to these files under OPENAPI_SWAGGER_UI_URL. Serving
them here keeps /docs working where the browser cannot reach a CDN.
"""

from __future__ import annotations

from flask import Blueprint, abort, send_from_directory
from swagger_ui_bundle import swagger_ui_path

ASSETS_URL = "/docs/assets/"

blueprint = Blueprint("swagger_assets", __name__)


# The files the /docs page loads. The package also ships a stock index.html that points at
# the public Petstore example, which this API has no reason to serve.
SERVED_FILES = frozenset(
    {"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
     "favicon-16x16.png", "favicon-32x32.png"}
)


@blueprint.get(f"{ASSETS_URL}<path:filename>")
def asset(filename: str):
    if filename not in SERVED_FILES:
        abort(404)
    return send_from_directory(swagger_ui_path, filename, max_age=86_400)
