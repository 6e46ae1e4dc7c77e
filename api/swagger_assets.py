"""Serve the Swagger UI scripts and styles from the swagger-ui-bundle package.

flask-smorest renders /docs with links to these files under OPENAPI_SWAGGER_UI_URL. Serving
them here keeps /docs working where the browser cannot reach a CDN.
"""

from __future__ import annotations

from flask import Blueprint, send_from_directory
from swagger_ui_bundle import swagger_ui_path

ASSETS_URL = "/docs/assets/"

blueprint = Blueprint("swagger_assets", __name__)


@blueprint.get(f"{ASSETS_URL}<path:filename>")
def asset(filename: str):
    # send_from_directory returns 404 for a path outside the folder or a missing file.
    return send_from_directory(swagger_ui_path, filename, max_age=86_400)
