"""docker-compose.yml is read as Docker Compose v2 reads it: YAML 1.2, where a
mapping with a key twice is an error (`restart:` twice in the db
service), and checked against the Compose specification's JSON schema (the
copy that the maintained package check-jsonschema ships)."""

from __future__ import annotations

import io
import json
from importlib import resources

import jsonschema
import pytest
from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError

from tests.support import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"


def strict_load(text: str):
    """YAML 1.2 that refuses a key given twice in one mapping."""
    yaml = YAML(typ="safe", pure=True)
    yaml.allow_duplicate_keys = False
    return yaml.load(io.StringIO(text))


def compose_schema() -> dict:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def validator():
    schema = compose_schema()
    return jsonschema.validators.validator_for(schema)(schema)


def test_the_strict_loader_refuses_a_duplicate_key():
    with pytest.raises(DuplicateKeyError):
        strict_load("services:\n  db:\n    restart: always\n    restart: always\n")


def test_the_compose_file_has_no_duplicate_key_and_follows_the_compose_specification():
    document = strict_load(COMPOSE_FILE.read_text())
    errors = sorted(validator().iter_errors(document), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    assert {"db", "migrate", "api", "calculator"} <= document["services"].keys()


def test_the_schema_check_refuses_what_compose_refuses():
    """The schema is not a formality: an unknown service key fails it."""
    document = strict_load(COMPOSE_FILE.read_text())
    document["services"]["db"]["restartt"] = "always"
    assert list(validator().iter_errors(document))
