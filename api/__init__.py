"""The Flask application factory."""

from __future__ import annotations

from flask import Flask
from werkzeug.exceptions import RequestEntityTooLarge

from mistralmeter.logging_setup import configure_logging
from mistralmeter.settings import Settings, get_settings

# Room for multipart framing around an upload of the maximum size.
UPLOAD_FRAMING_BYTES = 64 * 1024


def create_app(settings: Settings | None = None) -> Flask:
    from api import swagger_assets

    settings = settings or get_settings()
    app = Flask(__name__)
    app.config.update(
        MISTRALMETER_SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + UPLOAD_FRAMING_BYTES,
        API_TITLE="MistralMeter",
        API_VERSION="0.1.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        # Served by this app, so /docs needs no network access beyond the API.
        OPENAPI_SWAGGER_UI_URL=swagger_assets.ASSETS_URL,
        # Otherwise Swagger UI sends the spec's URL from the browser to validator.swagger.io
        # for a check.
        OPENAPI_SWAGGER_UI_CONFIG={"validatorUrl": None},
        JSON_SORT_KEYS=False,
    )
    configure_logging(settings)

    from api import compare, datasets, evaluate, health, jobs, schedules
    from api import ratings
    from api import stats, stream
    from api.errors import register_error_handlers
    from api.extensions import api
    from api.parsing import reject_unexpected_query
    from api.text_checks import check_request_text

    # Error handlers first, so the blueprints' own errors use the envelope too.
    register_error_handlers(app)
    app.before_request(reject_unexpected_query)
    app.before_request(check_request_text)
    api.init_app(app)
    app.register_error_handler(RequestEntityTooLarge, _too_large(settings))

    # One blueprint per resource.
    api.register_blueprint(health.blueprint)
    api.register_blueprint(evaluate.blueprint)
    api.register_blueprint(datasets.blueprint)
    api.register_blueprint(jobs.blueprint)
    api.register_blueprint(compare.blueprint)
    api.register_blueprint(schedules.blueprint)
    api.register_blueprint(ratings.blueprint)
    api.register_blueprint(stats.blueprint)
    api.register_blueprint(stream.blueprint)
    app.register_blueprint(swagger_assets.blueprint)
    return app


def _too_large(settings: Settings):
    def handle(_: RequestEntityTooLarge):
        limit_mb = settings.max_upload_bytes / (1024 * 1024)
        return {
            "code": 413,
            "status": "Payload Too Large",
            "message": f"request body is larger than the {limit_mb:g} MB limit; "
            "send a smaller body or split the dataset",
        }, 413

    return handle
