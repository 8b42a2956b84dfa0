"""What api/openapi.json says against what the API answers, for the gaps an
outside Schemathesis run found: the cross-origin refusal (403) and a
too-large body (413) on every POST route, and the dashboard's answer for an id
no task can have (the document says text/html)."""

from __future__ import annotations

import json

import pytest

from api.openapi import SPEC_PATH, load_spec
from core.settings import ApiSettings


def strict_pairs(pairs):
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    assert not duplicates, f"key(s) given twice in api/openapi.json: {duplicates}"
    return dict(pairs)


def response_doc(path: str, method: str, status: int) -> dict:
    spec = load_spec()
    answer = spec["paths"][path][method]["responses"].get(str(status))
    assert answer is not None, f"{method.upper()} {path} does not document {status}"
    while "$ref" in answer:
        answer = spec["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    return answer


POSTS = [path for path, operations in load_spec()["paths"].items() if "post" in operations]
WITH_BODY = [path for path in POSTS if "requestBody" in load_spec()["paths"][path]["post"]]


def test_the_document_has_no_key_twice():
    json.loads(SPEC_PATH.read_text(), object_pairs_hook=strict_pairs)


def test_every_post_route_is_covered_here():
    assert len(POSTS) == 4 and len(WITH_BODY) == 3


@pytest.mark.parametrize("path", POSTS)
def test_every_post_route_documents_the_cross_origin_refusal(client, db, path):
    response = client.post(path.replace("{expression_id}", "1"), json={"ids": [1]},
                           headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert response.mimetype in response_doc(path, "post", 403)["content"]


@pytest.mark.parametrize("path", WITH_BODY)
def test_every_post_route_with_a_body_documents_a_body_too_large(app, db, path):
    app.config["MAX_CONTENT_LENGTH"] = 100
    response = app.test_client().post(path.replace("{expression_id}", "1"), json={"ids": [1] * 100})
    assert response.status_code == 413
    assert response.mimetype in response_doc(path, "post", 413)["content"]


@pytest.mark.parametrize("task_id", ["999", "99999999999999999999"])
def test_an_unknown_task_s_fragment_is_html_as_documented(client, db, task_id):
    response = client.get(f"/dashboard/task/{task_id}")
    assert response.status_code == 404
    assert list(response_doc("/dashboard/task/{task_id}", "get", 404)["content"]) == [response.mimetype]
    assert f"No task with id {task_id}" in response.get_data(as_text=True)
