"""python -m api: the development server (use gunicorn in production, see docs/design.md, "The HTTP server")."""

import os

from core.logs import setup_logging


def main() -> None:
    setup_logging()
    from api import create_app
    app = create_app()
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "5000")),
            threaded=True)


if __name__ == "__main__":
    main()
