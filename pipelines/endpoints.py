"""Rules for an OpenAI-compatible endpoint that is not ragft's own server (a judge, a reference model).

A key is read from the environment only and must never travel in clear text over a network, nor
come back in an error text that ragft stores.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pipelines.errors import ConfigError

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def check_endpoint(url: str, what: str) -> str:
    """An OpenAI-compatible base URL: https, or http on this machine only."""
    url = url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} {url!r} is not an http(s) URL", "e.g. https://api.openai.com/v1")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:
        raise ConfigError(f"{what} {url!r} is plain http to another machine: the API key would travel unencrypted",
                          f"use https://{parts.netloc}{parts.path} (http is accepted on 127.0.0.1/localhost only)")
    return url


def on_this_machine(url: str) -> bool:
    return urlsplit(url).hostname in LOOPBACK


def scrub(text: str, secret: str) -> str:
    """An endpoint's error text without the key (a server may echo the request's headers)."""
    return text.replace(secret, "[key]") if secret and len(secret) >= 4 else text
