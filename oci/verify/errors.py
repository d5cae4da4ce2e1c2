"""Errors of ``runwasm.oci.verify``.

``VerificationError`` means "this image must not run": no acceptable signature. Its message
names the image, its digest and what failed. ``PolicyError`` is a malformed policy file.
"""

from __future__ import annotations

from runwasm.oci.errors import InvalidArgumentError, OciError


class VerificationError(OciError):
    """The image is refused by the verification policy."""

    status = "permission_denied"


class PolicyError(InvalidArgumentError):
    """The policy file (or a key / trust root it names) is malformed or missing."""
