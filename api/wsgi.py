"""WSGI entry point for production servers: gunicorn -c api/gunicorn.conf.py"""

from api import create_app
from core.logs import setup_logging

setup_logging()
app = create_app()
