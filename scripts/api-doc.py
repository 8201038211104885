#!/usr/bin/env python3
"""Writes docs/api.md from the service's OpenAPI document.

Usage: scripts/api-doc.py OPENAPI_JSON > docs/api.md
(The service serves the document at /openapi.json; the service tests check
that docs/api.md names every route in it.)
"""
import json, sys

doc = json.load(open(sys.argv[1]))
schemas = doc.get("components", {}).get("schemas", {})

def ref_name(s):
    if not isinstance(s, dict):
        return ""
    if "$ref" in s:
        return s["$ref"].rsplit("/", 1)[-1]
    if s.get("type") == "array":
        return "[" + ref_name(s.get("items", {})) + "]"
    return s.get("type", "") if isinstance(s.get("type"), str) else ""

out = ["# Airlock REST API v1", "",
       "Generated from the service's OpenAPI document (`GET /openapi.json`) by",
       "`scripts/api-doc.py`. Errors are `{\"error\":{\"code\",\"message\"}}` with a 4xx",
       "status (404 unknown, 409 wrong state — e.g. paused —, 413 too large, 422",
       "invalid). Over TCP every request needs `Authorization: Bearer <token>`.", ""]
for path in sorted(doc["paths"]):
    for method, op in sorted(doc["paths"][path].items()):
        out.append(f"## `{method.upper()} {path}`")
        out.append("")
        if op.get("description") or op.get("summary"):
            out.append((op.get("summary") or op.get("description")).strip())
            out.append("")
        params = op.get("parameters", [])
        if params:
            out.append("| parameter | in | type | |")
            out.append("|---|---|---|---|")
            for p in params:
                t = ref_name(p.get("schema", {}))
                out.append(f"| `{p['name']}` | {p['in']} | {t} | {(p.get('description') or '').replace(chr(10), ' ')} |")
            out.append("")
        rb = op.get("requestBody")
        if rb:
            for ct, c in rb.get("content", {}).items():
                out.append(f"Body (`{ct}`): {ref_name(c.get('schema', {})) or 'bytes'}")
            out.append("")
        for code, r in sorted(op.get("responses", {}).items()):
            desc = (r.get("description") or "").replace("\n", " ")
            body = ""
            for ct, c in r.get("content", {}).items():
                body = f" `{ct}` {ref_name(c.get('schema', {}))}"
            out.append(f"- **{code}**{body} {desc}".rstrip())
        out.append("")
out.append("# Schemas")
out.append("")
for name in sorted(schemas):
    s = schemas[name]
    out.append(f"## {name}")
    out.append("")
    if s.get("description"):
        out.append(s["description"].strip())
        out.append("")
    props = s.get("properties", {})
    if props:
        req = set(s.get("required", []))
        out.append("| field | type | required | |")
        out.append("|---|---|---|---|")
        for f, p in props.items():
            t = ref_name(p) or ("|".join(x for x in p.get("type", []) if isinstance(x, str)) if isinstance(p.get("type"), list) else "")
            out.append(f"| `{f}` | {t} | {'yes' if f in req else ''} | {(p.get('description') or '').replace(chr(10), ' ')} |")
        out.append("")
print("\n".join(out))
