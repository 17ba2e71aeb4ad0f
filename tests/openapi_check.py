"""Check real responses against the API's OpenAPI document.

`jsonschema` is not a dependency, so this validates the subset of JSON Schema the
document uses (type, enum, required, properties, additionalProperties, items,
minItems, maxItems, minimum, maximum, anyOf, $ref) and refuses any other keyword,
so the document cannot quietly grow a rule nobody checks. Annotations
(description, default, examples, format) are ignored, as JSON Schema allows.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

_ANNOTATIONS = {"description", "default", "examples", "format", "title"}
_KEYWORDS = {"$ref", "type", "enum", "required", "properties", "additionalProperties", "items",
             "minItems", "maxItems", "minimum", "maximum", "anyOf"} | _ANNOTATIONS
_TYPES: dict[str, Any] = {
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "string": lambda v: type(v) is str,
    "integer": lambda v: type(v) is int,
    "number": lambda v: type(v) in (int, float),
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
}


def resolve(doc: Mapping[str, Any], node: Mapping[str, Any]) -> Any:
    """Follow `$ref`s ("#/components/...") until a node without one."""
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def validate(doc: Mapping[str, Any], schema: Mapping[str, Any], value: Any, where: str = "$") -> list[str]:
    """Every way `value` breaks `schema`, as "where: what" strings; [] when it conforms."""
    schema = resolve(doc, schema)
    unknown = set(schema) - _KEYWORDS
    if unknown:
        raise ValueError(f"{where}: schema keywords {sorted(unknown)} are not supported by this checker")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            return [f"{where}: {json.dumps(value)[:60]} is not of type {' or '.join(types)}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "anyOf" in schema and all(validate(doc, s, value, where) for s in schema["anyOf"]):
        errors.append(f"{where}: {json.dumps(value)[:60]} matches none of anyOf")
    if type(value) in (int, float):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: {value} > maximum {schema['maximum']}")
    if type(value) is list:
        errors += _array(doc, schema, value, where)
    if type(value) is dict:
        errors += _object(doc, schema, value, where)
    return errors


def _array(doc: Mapping[str, Any], schema: Mapping[str, Any], value: list[Any], where: str) -> list[str]:
    errors = []
    if len(value) < schema.get("minItems", 0):
        errors.append(f"{where}: {len(value)} items, fewer than minItems {schema['minItems']}")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{where}: {len(value)} items, more than maxItems {schema['maxItems']}")
    if "items" in schema:
        for i, item in enumerate(value):
            errors += validate(doc, schema["items"], item, f"{where}[{i}]")
    return errors


def _object(doc: Mapping[str, Any], schema: Mapping[str, Any], value: dict[str, Any], where: str) -> list[str]:
    errors = [f"{where}: {name!r} is required" for name in schema.get("required", ()) if name not in value]
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            errors += validate(doc, properties[name], item, f"{where}.{name}")
        elif extra is False:
            errors.append(f"{where}: {name!r} is not an allowed property")
        elif extra is not True:
            errors += validate(doc, extra, item, f"{where}.{name}")
    return errors


def unsupported_keywords(doc: Mapping[str, Any]) -> list[str]:
    """Where the document's schemas use a keyword `validate` does not know (it would raise there)."""
    found: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "schema" in node and isinstance(node["schema"], dict):
                schema_walk(node["schema"], f"{where}.schema")
            for key, value in node.items():
                if key != "schema":
                    walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    def schema_walk(schema: Mapping[str, Any], where: str) -> None:
        found.extend(f"{where}: {k}" for k in sorted(set(schema) - _KEYWORDS))
        for key in ("properties",):
            for name, sub in schema.get(key, {}).items():
                schema_walk(sub, f"{where}.{key}.{name}")
        for sub in schema.get("anyOf", ()):
            schema_walk(sub, f"{where}.anyOf")
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                schema_walk(schema[key], f"{where}.{key}")

    walk(doc["paths"], "paths")
    for name, schema in doc["components"]["schemas"].items():
        schema_walk(schema, f"schemas.{name}")
    return found


def operation(doc: Mapping[str, Any], method: str, path: str) -> tuple[str | None, Any]:
    """The path template matching `path` and its operation for `method` (None where there is none)."""
    parts = path.split("/")
    for template, item in doc["paths"].items():
        pattern = template.split("/")
        if len(pattern) == len(parts) and all(p == q or (p.startswith("{") and q)
                                               for p, q in zip(pattern, parts)):
            return template, item.get(method.lower())
    return None, None


def check_response(doc: Mapping[str, Any], method: str, path: str, status: int,
                   headers: Mapping[str, str], body: bytes) -> None:
    """Assert that a real response is one the document describes, headers and body schema included."""
    template, op = operation(doc, method, path.split("?", 1)[0])
    if op is None:
        # Paths and methods the document does not list may only be refused, with an Error.
        assert status == (404 if template is None else 405), (method, path, status)
        responses: Mapping[str, Any] = {"default": {"$ref": "#/components/responses/Error"}}
    else:
        responses = op["responses"]
    described = responses.get(str(status)) or responses.get("default")
    assert described is not None, f"{method} {path}: status {status} is not in the document"
    described = resolve(doc, described)
    for name in described.get("headers", {}):
        assert name.lower() in headers, f"{method} {path} {status}: documented header {name} is missing"
    media = headers.get("content-type", "").split(";")[0].strip()
    if media != "application/json":  # a file download: the document names its media type, the body is bytes
        assert media in described["content"], f"{method} {path} {status}: {media!r} is not documented"
        return
    assert headers.get("content-type") == "application/json", headers
    schema = described["content"]["application/json"]["schema"]
    errors = validate(doc, schema, json.loads(body))
    assert not errors, f"{method} {path} {status} does not match the document: {errors}"
