"""Schemathesis hooks for hookline's OpenAPI conformance run (scripts/schemathesis.sh).

- `application/wasm` bodies (transform uploads) are sent as the raw bytes generated for their
  `format: binary` schema, like `application/octet-stream`.
- Half of the uploads carry one of the example components of transforms/dist/ instead of random
  bytes, so that an upload can succeed and the links from it (show, delete, test a version) reach
  a real transform.
"""

import pathlib

import schemathesis

schemathesis.serializer.alias("application/wasm", "application/octet-stream")

_DIST = pathlib.Path(__file__).resolve().parent.parent / "transforms" / "dist"
_COMPONENTS = [
    (_DIST / name).read_bytes()
    for name in ("drop-by-rule.wasm", "mask-pii.wasm", "to-xml.wasm")
    if (_DIST / name).is_file()
]


@schemathesis.hook
def map_body(context, body):
    op = context.operation
    if op is None or op.method.upper() != "PUT" or not op.path.endswith("/transforms/{name}"):
        return body
    data = getattr(body, "data", body)
    if not isinstance(data, (bytes, bytearray)) or not _COMPONENTS or len(data) % 2:
        return body
    return _COMPONENTS[len(data) % len(_COMPONENTS)]
