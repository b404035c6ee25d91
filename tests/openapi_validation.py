"""Check real HTTP answers against an OpenAPI 3.0 document: the route, the status code and the JSON body."""

from __future__ import annotations

import copy
import re

import jsonschema


def _json_schema(node: object) -> object:
    """OpenAPI 3.0's schema dialect as JSON Schema: `nullable: true` becomes a "null" type."""
    if isinstance(node, list):
        return [_json_schema(child) for child in node]
    if not isinstance(node, dict):
        return node
    out = {key: _json_schema(value) for key, value in node.items()}
    if out.pop("nullable", False) is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


class SpecChecker:
    """Finds the operation a request hit and validates the answer against what the document promises."""

    def __init__(self, document: dict):
        self.document = document
        self._components = _json_schema(copy.deepcopy(document.get("components", {})))
        self._routes = []
        for template, item in document["paths"].items():
            pattern = re.escape(template)
            pattern = re.sub(r"\\\{[^}]+\\\}", "[^/:]+", pattern)
            self._routes.append((re.compile(pattern), template, item))

    def operation(self, method: str, path: str) -> tuple[str, dict]:
        """The path template and operation object for a concrete request; fails when none matches."""
        path = path.split("?", 1)[0]
        found = [(template, item) for pattern, template, item in self._routes if pattern.fullmatch(path)]
        assert found, f"{path} is served but matches no path in the document"
        for template, item in found:
            if method.lower() in item:
                return template, item[method.lower()]
        raise AssertionError(f"{method} {path} is served but the document has no {method} for it")

    def check(self, method: str, path: str, response) -> None:
        """`response` (a requests.Response) is a status and body the document lists for this operation."""
        template, operation = self.operation(method, path)
        code = str(response.status_code)
        responses = operation["responses"]
        assert code in responses, (
            f"{method} {path} answered {code}, which {template} does not list ({sorted(responses)}): "
            f"{response.text[:300]}"
        )
        content = responses[code].get("content")
        mimetype = response.headers.get("Content-Type", "").split(";")[0].strip()
        if not content:
            assert not response.content or code == "204", f"{template} {code} documents no body"
            return
        assert mimetype in content, f"{template} {code} answered {mimetype}, documented {sorted(content)}"
        schema = content[mimetype].get("schema")
        if mimetype == "application/json" and schema:
            root = {"components": self._components, "allOf": [_json_schema(schema)]}
            jsonschema.Draft7Validator(root).validate(response.json())


def structural_problems(document: dict) -> list[str]:
    """What makes `document` an invalid OpenAPI 3.0 document (the rules a generator or validator trips on)."""
    problems = []
    if not str(document.get("openapi", "")).startswith("3.0."):
        problems.append("openapi is not 3.0.x")
    if not {"title", "version"} <= set(document.get("info", {})):
        problems.append("info needs title and version")

    def refs(node: object) -> list[str]:
        if isinstance(node, list):
            return [ref for child in node for ref in refs(child)]
        if not isinstance(node, dict):
            return []
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for child in node.values() for ref in refs(child)]

    schemas = document.get("components", {}).get("schemas", {})
    for ref in refs(document):
        if not (ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas):
            problems.append(f"$ref {ref} resolves to nothing")
    for template, item in document["paths"].items():
        placeholders = set(re.findall(r"\{([^}]+)\}", template))
        for method, operation in item.items():
            if method not in {"get", "put", "post", "delete", "options", "head", "patch", "trace"}:
                problems.append(f"{template}: {method} is no HTTP method")
                continue
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            if declared != placeholders:
                problems.append(f"{method} {template}: path parameters {declared} != {placeholders}")
            if not all(p.get("required") for p in operation.get("parameters", []) if p["in"] == "path"):
                problems.append(f"{method} {template}: a path parameter is not required: true")
            responses = operation.get("responses") or {}
            if not responses:
                problems.append(f"{method} {template}: no responses")
            for code, response in responses.items():
                if not re.fullmatch(r"[1-5]\d\d|[1-5]XX|default", code):
                    problems.append(f"{method} {template}: bad status key {code}")
                if "description" not in response:
                    problems.append(f"{method} {template} {code}: no description")
    for name, scheme in document.get("components", {}).get("securitySchemes", {}).items():
        if "type" not in scheme:
            problems.append(f"security scheme {name} has no type")
    return problems
