"""The ceiling for the API benchmark: Flask answering a constant JSON body,
served with the same gunicorn config as the API."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
