"""mask-pii in Python: the same masking as transforms/rust/mask-pii, built with componentize-py.

A value inside the envelope's ``payLoad`` is personal when it sits

* under an object key named like one of PII_FIELDS (``{"phone": "0812..."}``), or
* in the ``value`` of a ``{"name": <field>, "value": ...}`` pair whose ``name`` is one of them,
  the shape of a workflow node's ``input`` list (``{"name": "idNumber", "value": "3174..."}``).

Names compare case-insensitively. Strings and numbers are masked (the last two characters are
kept, values of up to four characters are masked entirely); when the personal value is an object
or a list, every string and number inside it is masked. Headers are kept, plus ``x-pii-masked``
with the number of masked values.

Build:  componentize-py -d ../../wit -w transformer componentize app -o mask-pii-py.wasm
(transforms/build.sh does this with a pinned componentize-py.)
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.handler import Action, Action_Deliver, Delivery, Event

PII_FIELDS = {"idnumber", "name", "phone", "email", "mobile"}  # compared lower-cased
FULLY_MASKED_UP_TO = 4


def mask(s: str) -> str:
    """'SITI CHURIAH' -> '**********AH'; values of up to 4 characters become all '*'."""
    keep = 0 if len(s) <= FULLY_MASKED_UP_TO else 2
    return "*" * (len(s) - keep) + s[len(s) - keep :]


def is_pii(field: str) -> bool:
    return field.lower() in PII_FIELDS


class Masker:
    def __init__(self) -> None:
        self.count = 0

    def mask_all(self, v):
        """Masks every string and number in v (booleans and nulls carry no personal data)."""
        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, str):
            self.count += 1
            return mask(v)
        if isinstance(v, (int, float)):
            self.count += 1
            return mask(json.dumps(v))
        if isinstance(v, list):
            return [self.mask_all(i) for i in v]
        return {k: self.mask_all(c) for k, c in v.items()}

    def mask_tree(self, v):
        """Masks personal values under personal keys or in personal {name, value} pairs."""
        if isinstance(v, list):
            return [self.mask_tree(i) for i in v]
        if not isinstance(v, dict):
            return v
        label = v.get("name")
        pair = isinstance(label, str) and "value" in v
        out = {}
        for key, child in v.items():
            if pair and key == "name":
                out[key] = child  # the label stays readable
            elif pair and key == "value" and is_pii(label):
                out[key] = self.mask_all(child)
            elif is_pii(key):
                out[key] = self.mask_all(child)
            else:
                out[key] = self.mask_tree(child)
        return out


def mask_body(body: bytes) -> tuple[bytes, int]:
    try:
        envelope = json.loads(body)
    except ValueError as e:
        raise Err(f"body is not valid JSON: {e}")
    if not isinstance(envelope, dict):
        raise Err("body is not a JSON object")
    m = Masker()
    if "payLoad" in envelope:
        envelope["payLoad"] = m.mask_tree(envelope["payLoad"])
    out = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))
    return out.encode("utf-8"), m.count


class Handler(exports.Handler):
    def transform(self, event: Event) -> Action:
        body, count = mask_body(event.body)
        headers = [(n, v) for (n, v) in event.headers if n.lower() != "x-pii-masked"]
        headers.append(("x-pii-masked", str(count)))
        return Action_Deliver(Delivery(headers=headers, body=body))
