"""The inbox's gettext catalogs and the choice of language for each request.

The catalogs are the ``.po`` files under ``locale/<language>/LC_MESSAGES``,
with English msgids. They are read with Babel at start and compiled to MO in
memory, so no compiled ``.mo`` file is kept in the repository. The language
is the ``lang`` cookie when it names a supported one, else the preferred one
of ``Accept-Language``, else Vietnamese.

After changing a message in a template or handler, update both catalogs and
translate the new entries::

    pybabel extract -F signserver/web/babel.cfg -k _ -k gettext -k ngettext:1,2 -o inbox.pot signserver/web
    pybabel update -i inbox.pot -d signserver/web/locale -D inbox --no-fuzzy-matching
"""

from __future__ import annotations

import io
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from signserver.i18n import DEFAULT_LANGUAGE, LANGUAGES, negotiate_language

__all__ = ["LANGUAGE_COOKIE", "DOMAIN", "load_translations", "request_language"]

LANGUAGE_COOKIE = "lang"
DOMAIN = "inbox"
LOCALE_DIR = Path(__file__).parent / "locale"


def load_translations(language: str, locale_dir: Path = LOCALE_DIR) -> Translations:
    """Read ``language``'s catalog and return it as a gettext translations object.

    Raises ValueError when the catalog has a message marked fuzzy, since
    gettext would then show the English msgid in its place.
    """
    path = locale_dir / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as po_file:
        catalog = read_po(po_file, locale=language, domain=DOMAIN)
    fuzzy = [message.id for message in catalog if message.id and message.fuzzy]
    if fuzzy:
        raise ValueError(f"{path}: {len(fuzzy)} fuzzy messages, the first {fuzzy[0]!r}; translate them")
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(fp=buffer, domain=DOMAIN)


def request_language(cookie_value: str | None, accept_language: str | None) -> str:
    """Return the page language: the ``lang`` cookie's, else the one ``Accept-Language`` prefers, else vi."""
    if cookie_value in LANGUAGES:
        return cookie_value  # type: ignore[return-value]
    return negotiate_language(accept_language) if accept_language else DEFAULT_LANGUAGE
