"""Keep credentials out of describer configs.

A describer entry becomes the describe rule's ``params``, which Snakemake records in
``.snakemake/metadata`` and may print in its log, so a secret written into the config would be
stored in plain text. Instead of masking secrets after the fact, such entries are refused with
a ConfigError that names the key (never its value) and points to ``api_key_env``, the name of
the environment variable that holds the key. Refused:

- a key that looks like a credential (``CREDENTIAL_NAMES``, or ending in ``CREDENTIAL_SUFFIXES``,
  compared case-insensitively with ``-`` read as ``_``), at any depth of the entry;
- a URL with user info (``https://user:key@host/v1``) or a credential-like query parameter
  (``?api_key=...``) in any string value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from agiqa.errors import ConfigError

CREDENTIAL_NAMES = frozenset(
    {
        "key",
        "apikey",
        "api_key",
        "token",
        "access_token",
        "auth_token",
        "bearer",
        "bearer_token",
        "password",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "credential",
        "credentials",
        "auth",
        "authorization",
    }
)
CREDENTIAL_SUFFIXES = ("_key", "apikey", "_token", "_secret", "_password", "_passwd")
# the variable *name* is exactly what we want users to write
ALLOWED_NAMES = frozenset({"api_key_env"})
# scheme://authority: the authority ends at the first /, ? or #
_AUTHORITY = re.compile(r"^[a-z][a-z0-9+.-]*://(?P<authority>[^/?#]*)", re.IGNORECASE)
HINT = (
    "put the secret in an environment variable and name that variable with api_key_env "
    "(config values are recorded by Snakemake in .snakemake/metadata and its log)"
)


def is_credential_name(name: str) -> bool:
    normal = name.strip().lower().replace("-", "_")
    if normal in ALLOWED_NAMES:
        return False
    return normal in CREDENTIAL_NAMES or normal.endswith(CREDENTIAL_SUFFIXES)


def url_credentials(value: str) -> str | None:
    """What makes ``value`` a URL that carries credentials (None when it carries none)."""
    match = _AUTHORITY.match(value.strip())
    if match is None:
        return None
    if "@" in match["authority"]:
        return "user info before '@'"
    try:
        query = parse_qsl(urlsplit(value.strip()).query, keep_blank_values=True)
    except ValueError:
        return None
    names = [name for name, _ in query if is_credential_name(name)]
    return f"query parameter '{names[0]}'" if names else None


def check_no_credentials(
    entry: Mapping[str, Any], owner: str = "describer", hint: str = HINT, names: bool = True
) -> None:
    """Raise ConfigError when a config entry holds a credential (see the module docs).

    Args:
        entry: The describer's config entry (or any config section, or the whole config).
        owner: How the message names the entry, e.g. ``describer 'doubao'``.
        hint: What the message tells the user to do instead.
        names: Also refuse credential-like key names (describer entries; model settings such as
            ``next_token`` would look like one).
    """
    _check(owner, entry, "", hint, names)


def _check(owner: str, value: Any, where: str, hint: str, names: bool = True) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            path = f"{where}.{key}" if where else str(key)
            if names and is_credential_name(str(key)):
                raise ConfigError(
                    f"{owner}: '{path}' looks like a credential and is not "
                    f"accepted in the config; {hint}"
                )
            _check(owner, inner, path, hint, names)
    elif isinstance(value, (list, tuple)):
        for index, inner in enumerate(value):
            _check(owner, inner, f"{where}[{index}]", hint, names)
    elif isinstance(value, str) and (problem := url_credentials(value)):
        raise ConfigError(
            f"{owner}: the URL in '{where}' carries credentials ({problem}); "
            f"remove them from the URL and {hint}"
        )
