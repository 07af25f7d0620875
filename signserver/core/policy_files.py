"""Reading and validating key policy files, each error with its file and line.

A policy set is one or more YAML files. They are checked in three stages,
and each stage covers every file before the next one starts. The stages are
YAML syntax, the JSON Schema in ``policies/schema.json``, and the rules a
schema cannot state: unique ids across files, owners that match the key, and
names that exist in the store. The first error found is raised as :class:`PolicyFileInvalid` with the file
name, the 1-based line of the offending node and the reason. Lines come from
the composed YAML nodes, so an error in a nested list item points at that
item, not at the top of the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from signserver.config import PROJECT_ROOT
from signserver.errors import InvalidInput

__all__ = [
    "PolicyFileInvalid",
    "PolicyTooLarge",
    "MAX_POLICY_DOCUMENTS",
    "MAX_POLICY_SET_BYTES",
    "check_policy_input",
    "KnownCredential",
    "KnownNames",
    "PolicyDocument",
    "SCHEMA_PATH",
    "shipped_schema",
    "read_policy_dir",
    "validate_documents",
    "parse_date_time",
]

SCHEMA_PATH = PROJECT_ROOT / "policies" / "schema.json"

# The schema needs five levels, so anything much deeper is a mistake or an attack on the parser.
MAX_NESTING = 32
TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
# A policy file name is a plain file name: no directory, space or control character, so that it prints and
# compares the same in a terminal, in the audit trail and in ``sha256sum`` output.
POLICY_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.yaml")
MAX_POLICY_DOCUMENTS = 50
# The cap on the UTF-8 size of a policy set. Parsing costs about 9 µs of CPU per byte (a 213 kB set took 1.8 s in
# parse_policy_documents, CPython 3.11 on a 2-core VM), so callers on the event loop parse in a worker thread.
MAX_POLICY_SET_BYTES = 1024 * 1024


class PolicyFileInvalid(InvalidInput):
    """A policy file cannot be applied. ``params``: ``file``, ``line`` (1-based) and ``reason``."""

    code = "policy_file_invalid"


class PolicyTooLarge(InvalidInput):
    """The policy files together are larger than the cap. ``params``: ``size`` and ``limit``, in UTF-8 bytes."""

    code = "policy_too_large"


@dataclass(frozen=True)
class KnownCredential:
    """The store's record of a credential, as far as the policy checks need it."""

    kind: str  # personal | seal | tsa
    owner_official_id: str | None
    agency: str


@dataclass(frozen=True)
class KnownNames:
    """The credentials, applications and officials in the store, to check the names a policy uses."""

    credentials: Mapping[str, KnownCredential]
    applications: frozenset[str]
    officials: frozenset[str]


@dataclass(frozen=True)
class PolicyDocument:
    """One policy file that passed the YAML and schema stages, with the line of every node."""

    name: str
    data: dict[str, Any]
    lines: Mapping[tuple[str | int, ...], int]

    def line(self, *path: str | int) -> int:
        return _line_at(self.lines, path)


def _line_at(lines: Mapping[tuple[str | int, ...], int], path: tuple[str | int, ...]) -> int:
    """Return the line of the node at ``path``, or of its nearest ancestor that has one."""
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return 1


class _PolicyLoader(yaml.SafeLoader):
    """A safe loader that keeps dates and times as strings, so the schema validates the text as written."""


_PolicyLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@lru_cache(maxsize=1)
def shipped_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def read_policy_dir(directory: Path) -> list[tuple[str, str]]:
    """Read the ``*.yaml`` files of ``directory``, sorted by name, as (file name, text) pairs.

    Raises PolicyFileInvalid for a file that is not UTF-8, with the line of the first bad byte.
    """
    documents = []
    for path in sorted(directory.glob("*.yaml")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise PolicyFileInvalid(file=path.name, line=line, reason="the file is not valid UTF-8") from None
        documents.append((path.name, text))
    return documents


def check_policy_input(documents: Sequence[tuple[str, str]]) -> None:
    """Check the number, the file names and the total size of policy documents, before any parsing.

    Raises InvalidInput ``field_invalid`` naming the first bad file name, and PolicyTooLarge.
    """
    if not 1 <= len(documents) <= MAX_POLICY_DOCUMENTS:
        raise InvalidInput("field_invalid", field="documents",
                           reason=f"give 1 to {MAX_POLICY_DOCUMENTS} policy files, not {len(documents)}")
    for index, (name, _text) in enumerate(documents):
        # fullmatch, because "$" would also accept a name that ends in a newline.
        if POLICY_FILE_NAME.fullmatch(name) is None:
            printable_name = repr(name) if len(name) <= 120 else repr(name[:120]) + "..."
            raise InvalidInput("field_invalid", field=f"documents[{index}].name",
                               reason=f"{printable_name} is not a policy file name: use 1 to 100 letters, digits, dots, "
                                      "hyphens or underscores, starting with a letter or digit, then .yaml")
    size = sum(len(text.encode("utf-8")) for _name, text in documents)
    if size > MAX_POLICY_SET_BYTES:
        raise PolicyTooLarge(size=size, limit=MAX_POLICY_SET_BYTES)
    for index, (name, text) in enumerate(documents):
        _check_policy_text(index, name, text)


# Characters a terminal acts on instead of showing: C0 and C1 controls other than tab and line feed (a carriage
# return is allowed only before a line feed), and the Unicode bidirectional controls that reorder what is shown.
# A policy containing one could look different to the approving officer from what it is.
_HIDDEN_CHARACTER = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _check_policy_text(index: int, name: str, text: str) -> None:
    """Reject a policy text with a character that would hide or reorder what the approver reads."""
    found = _HIDDEN_CHARACTER.search(text.replace("\r\n", "\n"))
    if found is None:
        return
    line = text.replace("\r\n", "\n")[:found.start()].count("\n") + 1
    raise InvalidInput("field_invalid", field=f"documents[{index}].text",
                       reason=f"{name} line {line} contains U+{ord(found.group()):04X}, a control or bidirectional "
                              "character that a terminal would not show as it is; remove it")


def parse_date_time(value: str) -> datetime:
    """Parse an ISO 8601 date and time with a UTC offset. Raise ValueError for an invalid date or no offset."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return parsed


def validate_documents(documents: Sequence[tuple[str, str]], known: KnownNames | None,
                       schema: dict[str, Any]) -> list[PolicyDocument]:
    """Run the three stages over ``documents`` and return them parsed. Raise PolicyFileInvalid at the first error."""
    names = [name for name, _ in documents]
    for position, name in enumerate(names):
        if name in names[:position]:
            raise PolicyFileInvalid(file=name, line=1, reason=f"the file name {name!r} is given twice")

    parsed = [(name, *_load_yaml(name, text)) for name, text in documents]

    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    checked = []
    for name, data, lines in parsed:
        _check_schema(validator, name, data, lines)
        checked.append(PolicyDocument(name=name, data=data, lines=lines))

    _SemanticCheck(checked, known).run()
    return checked


# Stage 1: YAML syntax


def _load_yaml(name: str, text: str) -> tuple[Any, dict[tuple[str | int, ...], int]]:
    _check_events(name, text)
    loader = _PolicyLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise _yaml_error(name, exc) from None
    finally:
        loader.dispose()

    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _index_lines(name, node, (), lines)
    return data, lines


def _check_events(name: str, text: str) -> None:
    """Reject aliases and deep nesting before composing, since the composer recurses once per level."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_PolicyLoader):
            line = event.start_mark.line + 1
            if isinstance(event, yaml.AliasEvent):
                raise PolicyFileInvalid(file=name, line=line,
                                        reason=f"YAML aliases (*{event.anchor}) are not allowed; write the value out")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_NESTING:
                    raise PolicyFileInvalid(file=name, line=line,
                                            reason=f"the document is nested deeper than {MAX_NESTING} levels")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError as exc:
        raise _yaml_error(name, exc) from None


def _yaml_error(name: str, exc: yaml.YAMLError) -> PolicyFileInvalid:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else 1
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    reason = " ".join(part for part in (context, problem) if part) if problem else str(exc)
    return PolicyFileInvalid(file=name, line=line, reason=f"invalid YAML: {reason}")


def _index_lines(name: str, node: yaml.Node, path: tuple[str | int, ...],
                 lines: dict[tuple[str | int, ...], int]) -> None:
    """Record the line of every node under ``path``. A mapping entry gets the line of its key."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            if key in seen:
                raise PolicyFileInvalid(file=name, line=key_line,
                                        reason=f"duplicate key {key!r}, first given on line {seen[key]}")
            seen[key] = key_line
            _index_lines(name, value_node, path + (key,), lines)
            lines[path + (key,)] = key_line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(name, item, path + (index,), lines)


# Stage 2: JSON Schema


def _check_schema(validator: Any, name: str, data: Any, lines: Mapping[tuple[str | int, ...], int]) -> None:
    located = [(_error_line(lines, error), error) for error in validator.iter_errors(data)]
    if not located:
        return
    first_line = min(line for line, _ in located)
    error = jsonschema.exceptions.best_match(error for line, error in located if line == first_line)
    raise PolicyFileInvalid(file=name, line=first_line, reason=error.message)


def _error_line(lines: Mapping[tuple[str | int, ...], int], error: jsonschema.ValidationError) -> int:
    """Return the line of the node an error is about, or for an unexpected key the line of that key."""
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = error.schema.get("properties", {})
        unexpected = [key for key in error.instance if key not in allowed]
        if unexpected:
            return _line_at(lines, path + (str(unexpected[0]),))
    return _line_at(lines, path)


# Stage 3: rules a schema cannot state


# Records a problem at a path relative to the key being checked.
Reporter = Callable[[tuple[str | int, ...], str], None]


@dataclass(frozen=True)
class _Problem:
    file_index: int
    line: int
    file: str
    reason: str


class _SemanticCheck:
    """Collect every semantic problem of a policy set, then raise the first by file order and line."""

    def __init__(self, documents: Sequence[PolicyDocument], known: KnownNames | None) -> None:
        self.documents = documents
        self.known = known
        self.problems: list[_Problem] = []
        self.credential_seen: dict[str, str] = {}
        self.rule_seen: dict[str, str] = {}

    def run(self) -> None:
        for file_index, document in enumerate(self.documents):
            for key_index, key in enumerate(document.data.get("keys", [])):
                self._check_key(file_index, document, ("keys", key_index), key)
        if self.problems:
            first = min(self.problems, key=lambda problem: (problem.file_index, problem.line))
            raise PolicyFileInvalid(file=first.file, line=first.line, reason=first.reason)

    def _report(self, file_index: int, document: PolicyDocument, path: tuple[str | int, ...], reason: str) -> None:
        self.problems.append(_Problem(file_index, document.line(*path), document.name, reason))

    def _check_key(self, file_index: int, document: PolicyDocument, path: tuple[str | int, ...],
                   key: dict[str, Any]) -> None:
        def report(relative: tuple[str | int, ...], reason: str) -> None:
            self._report(file_index, document, path + relative, reason)

        credential_id = key["credential"]
        location = f"{document.name} line {document.line(*path, 'credential')}"
        if credential_id in self.credential_seen:
            report(("credential",), f"credential {credential_id!r} already has a policy in "
                                    f"{self.credential_seen[credential_id]}; give each key one entry")
        else:
            self.credential_seen[credential_id] = location

        owner = key["owner"]
        self._check_window(key, report)
        for rule_index, rule in enumerate(key["rules"]):
            self._check_rule(document, path, rule_index, rule, owner, report)
        if self.known is not None:
            self._check_known_credential(credential_id, owner, report)
            for official_index, official_id in enumerate(owner.get("officials", [])):
                if official_id not in self.known.officials:
                    report(("owner", "officials", official_index), f"unknown official {official_id!r}")
            for rule_index, rule in enumerate(key["rules"]):
                for app_index, application_id in enumerate(rule["applications"]):
                    if application_id not in self.known.applications:
                        report(("rules", rule_index, "applications", app_index),
                               f"unknown application {application_id!r}")

    @staticmethod
    def _check_window(key: dict[str, Any], report: Reporter) -> None:
        window: dict[str, datetime] = {}
        for field in ("valid_from", "valid_until"):
            if field in key:
                try:
                    window[field] = parse_date_time(key[field])
                except ValueError as exc:
                    report((field,), f"{field} is not a valid date and time: {exc}")
        if len(window) == 2 and window["valid_from"] >= window["valid_until"]:
            report(("valid_until",), f"valid_until {key['valid_until']} must be later than "
                                     f"valid_from {key['valid_from']}")

    def _check_rule(self, document: PolicyDocument, key_path: tuple[str | int, ...], rule_index: int,
                    rule: dict[str, Any], owner: dict[str, Any], report: Reporter) -> None:
        rule_id = rule["id"]
        if rule_id in self.rule_seen:
            report(("rules", rule_index, "id"), f"rule id {rule_id!r} is already used in {self.rule_seen[rule_id]}")
        else:
            self.rule_seen[rule_id] = f"{document.name} line {document.line(*key_path, 'rules', rule_index, 'id')}"
        if rule.get("approval") == "none" and "agency" not in owner:
            report(("rules", rule_index, "approval"),
                   "approval: none is allowed only for a key owned by an agency (owner: {agency: ...}); "
                   "a personal key always needs its own official's OTP approval")

    def _check_known_credential(self, credential_id: str, owner: dict[str, Any], report: Reporter) -> None:
        assert self.known is not None
        credential = self.known.credentials.get(credential_id)
        if credential is None:
            report(("credential",), f"unknown credential {credential_id!r}: the store has no such credential")
            return
        if credential.kind == "tsa":
            report(("credential",), f"credential {credential_id!r} is the time-stamping authority's key; "
                                    f"it signs time-stamps only and cannot be given to applications")
        elif credential.kind == "personal":
            officials = owner.get("officials", [])
            if credential.owner_official_id not in officials:
                report(("owner",), f"credential {credential_id!r} is the personal key of official "
                                   f"{credential.owner_official_id!r}, so owner must be "
                                   f"{{officials: [{credential.owner_official_id}]}}")
        elif credential.kind == "seal":
            agency = owner.get("agency")
            if agency is None:
                report(("owner",), f"credential {credential_id!r} is an agency seal key, so owner must be "
                                   f"{{agency: ...}}")
            elif credential.agency and agency != credential.agency:
                report(("owner", "agency"), f"owner agency {agency!r} differs from the credential's agency "
                                            f"{credential.agency!r} in the store")

