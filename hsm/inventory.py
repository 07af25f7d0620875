"""Walking the token's objects: the ambiguity check and the key listing.

Keys are found by CKA_ID, and officers read them by CKA_LABEL, so two
objects of one class sharing either value would make a lookup pick one of
them silently. A private key and its public key share both values by
design, which is why objects are compared only within one class.
"""

from __future__ import annotations

from collections import defaultdict

import pkcs11
from pkcs11 import Attribute, KeyType, ObjectClass

from hsm.errors import AmbiguousTokenError, TokenObject

__all__ = ["CHECKED_CLASSES", "OBJECT_CLASS_NAMES", "check_unambiguous", "describe_object", "find_key_ids"]

OBJECT_CLASS_NAMES: dict[ObjectClass, str] = {
    ObjectClass.PRIVATE_KEY: "private key",
    ObjectClass.PUBLIC_KEY: "public key",
    ObjectClass.SECRET_KEY: "secret key",
    ObjectClass.CERTIFICATE: "certificate",
}

CHECKED_CLASSES = tuple(OBJECT_CLASS_NAMES)

KEY_TYPE_NAMES: dict[KeyType, str] = {KeyType.RSA: "RSA", KeyType.EC: "EC"}


def describe_object(found: pkcs11.Object) -> TokenObject:
    """Read an object's class, CKA_ID and CKA_LABEL; a missing ID or label reads as empty."""
    # get_attributes leaves out attributes the object does not have (a data
    # object has no CKA_ID) instead of raising.
    attributes = found.get_attributes([Attribute.CLASS, Attribute.ID, Attribute.LABEL])
    object_class = attributes.get(Attribute.CLASS)
    try:
        class_name = OBJECT_CLASS_NAMES.get(object_class) or ObjectClass(object_class).name.lower()
    except ValueError:
        class_name = f"object class 0x{object_class:x}"
    return TokenObject(class_name, attributes.get(Attribute.ID, b""), attributes.get(Attribute.LABEL, ""))


def check_unambiguous(session: pkcs11.Session) -> None:
    """Raise AmbiguousTokenError if two objects of one class share a CKA_ID or a CKA_LABEL.

    Empty IDs and labels are not compared, because no lookup uses them. The
    error lists every object involved in every clash.
    """
    clashes: list[tuple[str, str, list[TokenObject]]] = []

    for object_class in CHECKED_CLASSES:
        by_id: dict[bytes, list[TokenObject]] = defaultdict(list)
        by_label: dict[str, list[TokenObject]] = defaultdict(list)
        for found in session.get_objects({Attribute.CLASS: object_class}):
            described = describe_object(found)
            if described.key_id:
                by_id[described.key_id].append(described)
            if described.label:
                by_label[described.label].append(described)

        class_name = OBJECT_CLASS_NAMES[object_class]
        for key_id, objects in by_id.items():
            if len(objects) > 1:
                clashes.append((class_name, f"CKA_ID {key_id.hex()}", objects))
        for label, objects in by_label.items():
            if len(objects) > 1:
                clashes.append((class_name, f"CKA_LABEL {label!r}", objects))

    if not clashes:
        return

    parts = []
    involved: list[TokenObject] = []
    for class_name, shared, objects in clashes:
        names = "; ".join(str(found) for found in objects)
        parts.append(f"{len(objects)} {class_name} objects share {shared}: {names}")
        involved.extend(found for found in objects if found not in involved)
    raise AmbiguousTokenError(
        "ambiguous token: " + ". ".join(parts) + ". Remove or relabel the extra objects.",
        tuple(involved),
    )


def find_key_ids(session: pkcs11.Session) -> list[tuple[bytes, str, str]]:
    """List (CKA_ID, CKA_LABEL, key type) of every private key, sorted by CKA_ID.

    The key type is "RSA" or "EC", or the PKCS#11 name for other types.
    """
    keys = []
    for found in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}):
        attributes = found.get_attributes([Attribute.ID, Attribute.LABEL, Attribute.KEY_TYPE])
        key_type = attributes.get(Attribute.KEY_TYPE)
        keys.append(
            (
                attributes.get(Attribute.ID, b""),
                attributes.get(Attribute.LABEL, ""),
                key_type_name(key_type),
            )
        )
    return sorted(keys)


def key_type_name(key_type: int | None) -> str:
    """Return "RSA" or "EC", or the PKCS#11 name of another key type."""
    if key_type in KEY_TYPE_NAMES:
        return KEY_TYPE_NAMES[key_type]
    try:
        return KeyType(key_type).name
    except ValueError:
        return f"0x{key_type:x}" if key_type is not None else "unknown"
