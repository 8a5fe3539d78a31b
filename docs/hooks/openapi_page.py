"""MkDocs hook: the API reference page generated from the service's OpenAPI schema.

Placeholder: the generator lands with the API contract work; until then the committed
``api-reference.md`` stands as it is.
"""
