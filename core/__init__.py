"""Shared foundations beneath every pipeline stage.

Stages (``materialize``, ``training``, ``serving``, ``monitoring``) may import from here; this
package imports none of them.
"""
